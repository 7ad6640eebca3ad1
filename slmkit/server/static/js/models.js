// The model picker, shared by the chat and compare pages.

import { el } from "./dom.js";

export const OTHER = "__other__"; // "Other…": a model name typed by hand (e.g. a provider model)

/** Fill `select` with `models` (local first, then remote), keeping `selected` when offered. */
export function fillModelSelect(select, models, selected, { allowOther = false } = {}) {
  select.replaceChildren();
  const groups = [
    ["On this machine", models.filter((m) => !m.remote)],
    ["Remote (through this server)", models.filter((m) => m.remote)],
  ];
  for (const [label, list] of groups) {
    if (!list.length) continue;
    const group = el("optgroup");
    group.label = label;
    for (const m of list) {
      const option = el("option", "", m.vision ? `${m.id}  (text + images)` : m.id);
      option.value = m.id;
      group.append(option);
    }
    select.append(group);
  }
  if (allowOther) {
    const option = el("option", "", "Other (type a name)…");
    option.value = OTHER;
    select.append(option);
  }
  const ids = models.map((m) => m.id);
  if (selected && (ids.includes(selected) || selected === OTHER)) select.value = selected;
  else if (ids.length) select.value = ids[0];
  else if (allowOther) select.value = OTHER;
}

export function findModel(models, id) {
  return models.find((m) => m.id === id) || { id, vision: false, remote: false };
}

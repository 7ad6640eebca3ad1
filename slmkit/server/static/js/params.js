// Sampling fields (`data-param` inputs) to request fields and back. An empty field is not sent,
// so the server applies the model's own default.

const NUMBERS = new Set(["temperature", "top_p", "min_p"]);
const INTEGERS = new Set(["top_k", "max_tokens", "seed"]);

function fields(container) {
  return [...container.querySelectorAll("[data-param]")];
}

/** The request fields these inputs ask for (`system` is returned too; the caller places it).
 * Throws an Error naming the field for a value the browser itself flags as invalid. */
export function readParams(container) {
  const out = {};
  for (const input of fields(container)) {
    const name = input.dataset.param;
    if (input.type === "checkbox") {
      if (name === "json" && input.checked) out.response_format = { type: "json_object" };
      continue;
    }
    const raw = input.value.trim();
    if (name === "stop") {
      const stops = input.value.split("\n").filter((s) => s.length);
      if (stops.length) out.stop = stops;
      continue;
    }
    if (!raw && !(input.validity && input.validity.badInput)) continue;
    if (NUMBERS.has(name) || INTEGERS.has(name)) {
      const label = input.labels && input.labels[0] ? input.labels[0].textContent.trim() : name;
      const v = input.validity;
      const value = Number(raw);
      // Not the step: 0.33 is a fine temperature even though the arrows move by 0.05.
      if (v.badInput || raw === "" || !Number.isFinite(value)) throw new Error(`${label}: not a number`);
      if (v.rangeUnderflow || v.rangeOverflow) {
        throw new Error(`${label}: ${raw} is out of range (${input.min || "…"} to ${input.max || "…"})`);
      }
      if (INTEGERS.has(name) && !Number.isInteger(value)) throw new Error(`${label}: ${raw} is not a whole number`);
      out[name] = value;
    } else {
      out[name] = input.value;
    }
  }
  return out;
}

/** The raw field values, to keep across reloads. */
export function snapshot(container) {
  const out = {};
  for (const input of fields(container)) {
    out[input.dataset.param] = input.type === "checkbox" ? input.checked : input.value;
  }
  return out;
}

export function restore(container, values) {
  if (!values) return;
  for (const input of fields(container)) {
    const value = values[input.dataset.param];
    if (value === undefined) continue;
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = value;
  }
}

export function clearParams(container) {
  for (const input of fields(container)) {
    if (input.dataset.param === "system") continue;
    if (input.type === "checkbox") input.checked = false;
    else input.value = "";
  }
}

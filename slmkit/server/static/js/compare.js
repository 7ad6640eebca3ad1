// The compare page: one prompt to 2-4 models at once, answers side by side, a vote per round,
// votes exported as JSONL (one object a line: prompt, models, answers, choice, timings).

import { streamChat, StreamTimer, formatStats } from "./api.js";
import { announce, button, el } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { fillModelSelect } from "./models.js";
import { readParams, restore, snapshot } from "./params.js";
import { forget, load, save } from "./storage.js";

const SETTINGS_KEY = "slmkit.compare.settings";
const VOTES_KEY = "slmkit.compare.votes";
const LETTERS = "ABCD";

const $ = (id) => document.getElementById(id);

export class ComparePage {
  constructor() {
    this.models = [];
    this.settings = load(SETTINGS_KEY, { models: [] });
    this.votes = load(VOTES_KEY, []);
    this.round = null; // {prompt, system, params, models, answers, stats, errors}
    this.controllers = [];
    this.form = $("compare-form");
    restore(this.form, this.settings.params);
    this.wire();
    this.showVoteCount();
  }

  wire() {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.run();
    });
    $("compare-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.run();
      }
    });
    this.form.addEventListener("input", () => this.saveSettings());
    $("compare-stop").addEventListener("click", () => this.stop());
    $("compare-add").addEventListener("click", () => {
      const chosen = this.chosen();
      const next = this.models.map((m) => m.id).find((id) => !chosen.includes(id)) || this.models[0].id;
      this.renderPickers([...chosen, next]);
      this.saveSettings();
    });
    $("compare-export").addEventListener("click", () => this.exportVotes());
    $("compare-clear").addEventListener("click", () => {
      this.votes = [];
      forget(VOTES_KEY);
      this.showVoteCount();
    });
  }

  setModels(models) {
    this.models = models;
    let chosen = (this.settings.models || []).filter((id) => models.some((m) => m.id === id));
    for (const m of models) if (chosen.length < 2 && !chosen.includes(m.id)) chosen.push(m.id);
    while (chosen.length < 2 && models.length) chosen.push(models[0].id);
    this.renderPickers(chosen.slice(0, 4));
  }

  renderPickers(ids) {
    const list = $("compare-model-list");
    list.replaceChildren();
    ids.forEach((id, i) => {
      const row = el("div", "model-row");
      const label = el("label", "", `Model ${LETTERS[i]}`);
      const select = el("select", "compare-model");
      select.id = `compare-model-${i}`;
      label.htmlFor = select.id;
      fillModelSelect(select, this.models, id);
      select.addEventListener("change", () => this.saveSettings());
      row.append(label, select);
      if (ids.length > 2) {
        const remove = button("Remove", "ghost small", () => {
          this.renderPickers(this.chosen().filter((_, j) => j !== i));
          this.saveSettings();
        });
        remove.setAttribute("aria-label", `Remove model ${LETTERS[i]}`);
        row.append(remove);
      }
      list.append(row);
    });
    $("compare-add").hidden = ids.length >= 4 || this.models.length === 0;
  }

  chosen() {
    return [...document.querySelectorAll(".compare-model")].map((s) => s.value);
  }

  saveSettings() {
    this.settings = { models: this.chosen(), params: snapshot(this.form) };
    save(SETTINGS_KEY, this.settings);
  }

  async run() {
    if (this.controllers.length) return;
    const prompt = $("compare-input").value.trim();
    if (!prompt) return;
    const models = this.chosen();
    const columns = $("compare-columns");
    columns.replaceChildren();
    $("compare-vote").hidden = true;
    let params;
    try {
      params = readParams(this.form);
    } catch (error) {
      columns.append(el("p", "msg error", error.message));
      return;
    }
    const { system, ...fields } = params;
    const messages = [...(system && system.trim() ? [{ role: "system", content: system }] : []),
      { role: "user", content: prompt }];
    this.round = { prompt, system: system || "", params: fields, models, answers: models.map(() => ""),
                   stats: models.map(() => null), errors: models.map(() => null) };
    columns.style.setProperty("--columns", String(models.length));
    const nodes = models.map((model, i) => {
      const column = el("article", "compare-column streaming");
      column.setAttribute("aria-busy", "true");
      const head = el("header", "msg-head");
      head.append(el("span", "letter", LETTERS[i]), el("h2", "who", model));
      column.append(head, el("div", "body markdown"), el("footer", "stats", "Waiting for the first token…"));
      columns.append(column);
      return column;
    });
    this.setBusy(true);
    this.controllers = models.map(() => new AbortController());
    await Promise.all(models.map((model, i) => this.answer(i, model, messages, fields, nodes[i])));
    this.controllers = [];
    this.setBusy(false);
    this.offerVote();
    announce("All answers finished");
  }

  async answer(i, model, messages, fields, node) {
    const timer = new StreamTimer();
    const body = node.querySelector(".body");
    const stats = node.querySelector(".stats");
    let frame = 0;
    const paint = () => {
      frame = 0;
      body.replaceChildren(renderMarkdown(this.round.answers[i]));
      stats.textContent = formatStats(timer.stats());
    };
    try {
      const { finish, usage } = await streamChat({ model, messages, ...fields }, {
        signal: this.controllers[i].signal,
        onDelta: (text) => {
          this.round.answers[i] += text;
          timer.piece();
          if (!frame) frame = requestAnimationFrame(paint);
        },
      });
      this.round.stats[i] = timer.stats(usage, finish);
    } catch (error) {
      this.round.stats[i] = timer.stats(null, error.name === "AbortError" ? "stopped" : "error");
      if (error.name !== "AbortError") {
        this.round.errors[i] = error.message;
        node.append(el("p", "error-text", error.message));
        node.classList.add("failed");
      }
    } finally {
      if (frame) cancelAnimationFrame(frame);
      body.replaceChildren(renderMarkdown(this.round.answers[i]));
      stats.textContent = formatStats(this.round.stats[i]);
      node.classList.remove("streaming");
      node.removeAttribute("aria-busy");
    }
  }

  stop() {
    this.controllers.forEach((c) => c.abort());
  }

  setBusy(busy) {
    $("compare-stop").hidden = !busy;
    $("compare-run").disabled = busy;
    $("compare-run").textContent = busy ? "Running…" : "Run";
  }

  offerVote() {
    const buttons = $("compare-vote-buttons");
    buttons.replaceChildren();
    this.round.models.forEach((model, i) => {
      buttons.append(button(`${LETTERS[i]} is better`, "vote-button", () => this.vote(model)));
    });
    buttons.append(button("Tie", "vote-button", () => this.vote("tie")),
      button("All bad", "vote-button", () => this.vote("all bad")));
    $("compare-vote").hidden = false;
  }

  vote(choice) {
    const r = this.round;
    this.votes.push({ time: new Date().toISOString(), prompt: r.prompt, system: r.system, params: r.params,
                      models: r.models, answers: r.answers, choice, stats: r.stats, errors: r.errors });
    save(VOTES_KEY, this.votes);
    $("compare-vote").hidden = true;
    this.showVoteCount(`Saved: ${choice === "tie" || choice === "all bad" ? choice : `${choice} is better`}. `);
  }

  showVoteCount(prefix = "") {
    const n = this.votes.length;
    $("compare-vote-count").textContent = `${prefix}${n} vote${n === 1 ? "" : "s"} kept in this browser.`;
    $("compare-export").disabled = n === 0;
    $("compare-clear").disabled = n === 0;
  }

  exportVotes() {
    const text = this.votes.map((v) => JSON.stringify(v)).join("\n") + "\n";
    const url = URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" }));
    const a = el("a");
    a.href = url;
    a.download = `slmkit-votes-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.jsonl`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }
}

// The chat page: one conversation with one model, streamed, kept in localStorage.

import { streamChat, StreamTimer, formatStats } from "./api.js";
import { announce, button, copyWithFeedback, el } from "./dom.js";
import { acceptImages, imageDataUrl, renderThumbs } from "./images.js";
import { renderMarkdown } from "./markdown.js";
import { OTHER, fillModelSelect, findModel } from "./models.js";
import { clearParams, readParams, restore, snapshot } from "./params.js";
import { forget, load, save } from "./storage.js";

const CONVERSATION_KEY = "slmkit.chat.conversation";
const SETTINGS_KEY = "slmkit.chat.settings";

const $ = (id) => document.getElementById(id);

export class ChatPage {
  constructor() {
    this.models = [];
    this.messages = load(CONVERSATION_KEY, { messages: [] }).messages || [];
    this.pending = []; // images attached to the next message: {url, name}
    this.controller = null; // the running answer's AbortController
    this.settings = load(SETTINGS_KEY, {});
    this.form = $("chat-settings-form");
    this.input = $("chat-input");
    this.log = $("conversation");
    restore(this.form, this.settings.params);
    $("chat-model-other").value = this.settings.other || "";
    if (window.matchMedia("(max-width: 760px)").matches) $("chat-settings").open = false;
    this.wire();
    this.render();
  }

  // -- setup -------------------------------------------------------------------------------
  wire() {
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      }
    });
    $("chat-stop-button").addEventListener("click", () => this.stop());
    $("chat-reset").addEventListener("click", () => this.reset());
    $("chat-params-reset").addEventListener("click", () => {
      clearParams(this.form);
      this.saveSettings();
    });
    this.form.addEventListener("input", () => this.saveSettings());
    $("chat-model").addEventListener("change", () => {
      this.saveSettings();
      this.updateModelNote();
    });
    $("chat-model-other").addEventListener("input", () => {
      this.saveSettings();
      this.updateModelNote();
    });
    acceptImages({ zone: $("composer"), input: $("chat-image-input"), pasteTarget: this.input,
                   add: (files) => this.attach(files) });
    this.log.addEventListener("click", (event) => {
      const target = event.target.closest("[data-copy=code]");
      if (target) copyWithFeedback(target, target.closest("figure").querySelector("pre").textContent);
    });
  }

  setModels(models) {
    this.models = models;
    fillModelSelect($("chat-model"), models, this.settings.model, { allowOther: true });
    this.updateModelNote();
  }

  modelId() {
    const chosen = $("chat-model").value;
    return chosen === OTHER ? $("chat-model-other").value.trim() : chosen;
  }

  saveSettings() {
    this.settings = { model: $("chat-model").value, other: $("chat-model-other").value, params: snapshot(this.form) };
    save(SETTINGS_KEY, this.settings);
  }

  saveConversation() {
    if (save(CONVERSATION_KEY, { messages: this.messages })) return;
    // Too big for the browser's quota (images): keep the words, drop the pictures from the copy.
    const light = this.messages.map((m) => (m.images ? { ...m, images: [], imagesDropped: m.images.length } : m));
    if (!save(CONVERSATION_KEY, { messages: light })) forget(CONVERSATION_KEY);
  }

  // -- images ------------------------------------------------------------------------------
  async attach(files) {
    for (const file of files) {
      try {
        this.pending.push({ url: await imageDataUrl(file), name: file.name || "pasted image" });
      } catch (error) {
        this.showNotice(error.message);
        return;
      }
    }
    this.renderPending();
  }

  renderPending() {
    renderThumbs($("chat-attachments"), this.pending, (index) => {
      this.pending.splice(index, 1);
      this.renderPending();
      this.input.focus();
    });
    this.updateModelNote();
  }

  /** A text-only model says so as soon as an image is in play, before anything is sent. */
  imageProblem() {
    const id = this.modelId();
    const model = findModel(this.models, id);
    const withImages = this.pending.length || this.messages.some((m) => m.images && m.images.length);
    if (!withImages || model.vision) return null;
    return `${id || "This model"} reads text only: it cannot take images. Remove the image, or pick a model ` +
      "marked “text + images”.";
  }

  updateModelNote() {
    const id = this.modelId();
    const model = findModel(this.models, id);
    $("chat-model-other-field").hidden = $("chat-model").value !== OTHER;
    $("chat-model-note").textContent = !id ? "" :
      `${model.remote ? `Remote, through ${model.provider}` : "Local"} · ${model.vision ? "text and images" : "text only"}`;
    this.showNotice(this.imageProblem());
    this.input.placeholder = id ? `Message ${id}…  (drop or paste images here)` : "Message the model…";
  }

  showNotice(text) {
    const notice = $("chat-image-notice");
    notice.textContent = text || "";
    notice.hidden = !text;
  }

  // -- sending -----------------------------------------------------------------------------
  send() {
    if (this.controller) return;
    const text = this.input.value.trim();
    if (!text && !this.pending.length) return;
    const problem = this.imageProblem();
    if (problem) {
      this.showNotice(problem);
      return;
    }
    const message = { role: "user", content: text };
    if (this.pending.length) message.images = this.pending;
    this.messages.push(message);
    this.pending = [];
    this.input.value = "";
    this.renderPending();
    this.answer();
  }

  /** What the API gets: the system prompt, then the turns (errors and empty answers left out). */
  requestMessages(system) {
    const out = system && system.trim() ? [{ role: "system", content: system }] : [];
    for (const m of this.messages) {
      if (m.role === "user" && m.images && m.images.length) {
        out.push({ role: "user", content: [{ type: "text", text: m.content },
          ...m.images.map((image) => ({ type: "image_url", image_url: { url: image.url } }))] });
      } else if ((m.role === "user" || m.role === "assistant") && m.content) {
        out.push({ role: m.role, content: m.content });
      }
    }
    return out;
  }

  async answer() {
    const model = this.modelId();
    let params;
    try {
      if (!model) throw new Error("pick a model first (or type its name under “Other”)");
      params = readParams(this.form);
    } catch (error) {
      this.messages.push({ role: "error", content: error.message });
      this.finish();
      return;
    }
    const { system, ...fields } = params;
    const body = { model, messages: this.requestMessages(system), ...fields };
    const reply = { role: "assistant", model, content: "", stats: null };
    this.messages.push(reply);
    this.controller = new AbortController();
    this.setBusy(true);
    this.render();
    const node = this.log.lastElementChild;
    node.setAttribute("aria-busy", "true");
    node.classList.add("streaming");
    node.querySelector(".stats").textContent = "Waiting for the first token…";
    const timer = new StreamTimer();
    let frame = 0;
    const paint = () => {
      frame = 0;
      this.fillBody(node, reply);
      node.querySelector(".stats").textContent = formatStats(timer.stats());
      this.keepScrolled();
    };
    try {
      const { finish, usage } = await streamChat(body, {
        signal: this.controller.signal,
        onDelta: (text) => {
          reply.content += text;
          timer.piece();
          if (!frame) frame = requestAnimationFrame(paint);
        },
      });
      reply.stats = timer.stats(usage, finish);
      announce("Answer finished");
    } catch (error) {
      if (error.name === "AbortError") {
        reply.stats = timer.stats(null, "stopped");
        announce("Stopped");
      } else {
        reply.stats = timer.stats(null, "error");
        if (!reply.content) this.messages.pop();
        this.messages.push({ role: "error", content: error.message, status: error.status });
        announce(`Error: ${error.message}`);
      }
    } finally {
      if (frame) cancelAnimationFrame(frame);
      this.controller = null;
      this.finish();
    }
  }

  finish() {
    this.setBusy(false);
    this.saveConversation();
    this.render();
    this.input.focus();
  }

  stop() {
    if (this.controller) this.controller.abort();
  }

  reset() {
    this.stop();
    this.messages = [];
    this.pending = [];
    this.renderPending();
    this.saveConversation();
    this.render();
    this.input.focus();
  }

  /** Drop everything from message `index` on and answer again from there. */
  resendFrom(index) {
    if (this.controller) return;
    this.messages = this.messages.slice(0, index);
    while (this.messages.length && this.messages[this.messages.length - 1].role !== "user") this.messages.pop();
    if (!this.messages.length) return this.render();
    this.answer();
  }

  setBusy(busy) {
    $("chat-stop-button").hidden = !busy;
    $("chat-send").disabled = busy;
    $("chat-send").textContent = busy ? "Answering…" : "Send";
  }

  keepScrolled() {
    const near = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 120;
    if (near) this.log.scrollTop = this.log.scrollHeight;
  }

  // -- rendering ---------------------------------------------------------------------------
  render() {
    $("chat-empty").hidden = this.messages.length > 0;
    [...this.log.querySelectorAll(".msg")].forEach((n) => n.remove());
    this.messages.forEach((m, i) => this.log.append(this.messageNode(m, i)));
    this.log.scrollTop = this.log.scrollHeight;
    this.updateModelNote();
  }

  fillBody(node, message) {
    const body = node.querySelector(".body");
    if (message.role === "assistant") body.replaceChildren(renderMarkdown(message.content));
    else body.textContent = message.content;
  }

  messageNode(message, index) {
    const node = el("article", `msg ${message.role}`);
    node.dataset.index = String(index);
    if (message.role === "error") node.setAttribute("role", "alert");
    const head = el("header", "msg-head");
    const who = { user: "You", error: "Error", assistant: message.model || "Assistant" }[message.role];
    head.append(el("span", "who", who));
    const actions = el("span", "msg-actions");
    const last = index === this.messages.length - 1;
    if (message.role === "user") {
      actions.append(button("Edit", "ghost small", () => this.edit(node, index)));
    } else if (message.role === "assistant") {
      const copy = button("Copy", "ghost small");
      copy.addEventListener("click", () => copyWithFeedback(copy, message.content));
      copy.setAttribute("aria-label", "Copy answer");
      actions.append(copy);
      if (last && !this.controller) actions.append(button("Regenerate", "ghost small", () => this.resendFrom(index)));
    } else if (last) {
      actions.append(button("Retry", "ghost small", () => this.resendFrom(index)));
    }
    head.append(actions);
    node.append(head);
    if (message.images && message.images.length) {
      const thumbs = el("ul", "thumbs in-message");
      thumbs.setAttribute("aria-label", "Images sent");
      renderThumbs(thumbs, message.images);
      node.append(thumbs);
    }
    if (message.imagesDropped) node.append(el("p", "hint", `${message.imagesDropped} image(s) too big to keep across reloads`));
    node.append(el("div", message.role === "assistant" ? "body markdown" : "body plain"));
    this.fillBody(node, message);
    if (message.role === "assistant") node.append(el("footer", "stats", formatStats(message.stats)));
    return node;
  }

  /** Edit a sent message in place; saving drops what came after it and asks again. */
  edit(node, index) {
    if (this.controller) return;
    const message = this.messages[index];
    const body = node.querySelector(".body");
    const area = el("textarea", "edit-area");
    area.value = message.content;
    area.setAttribute("aria-label", "Edit message");
    area.rows = Math.min(10, message.content.split("\n").length + 1);
    const bar = el("div", "edit-bar");
    const save = () => {
      const text = area.value.trim();
      if (!text && !(message.images && message.images.length)) return;
      this.messages[index] = { ...message, content: text };
      this.resendFrom(index + 1);
    };
    bar.append(button("Cancel", "ghost small", () => this.render()), button("Save and send", "primary small", save));
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        save();
      } else if (event.key === "Escape") {
        event.stopPropagation();
        this.render();
      }
    });
    body.replaceChildren(area, bar);
    area.focus();
  }
}

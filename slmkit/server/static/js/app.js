// Boot: the API key dialog, the model list, and the two pages (#chat, #compare).

import { apiKey, listModels, onKeyNeeded, setApiKey } from "./api.js";
import { ChatPage } from "./chat.js";
import { ComparePage } from "./compare.js";

const $ = (id) => document.getElementById(id);

let keyRequest = null; // one dialog for every call that got a 401 meanwhile

function askForKey(why) {
  if (keyRequest) return keyRequest;
  const dialog = $("key-dialog");
  const input = $("key-input");
  $("key-why").textContent = why || "";
  $("key-button").hidden = false;
  input.value = "";
  keyRequest = new Promise((resolve) => {
    const done = (key) => {
      dialog.close();
      keyRequest = null;
      $("key-form").onsubmit = null;
      $("key-cancel").onclick = null;
      dialog.oncancel = null;
      resolve(key);
    };
    $("key-form").onsubmit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      setApiKey(key);
      done(key);
    };
    $("key-cancel").onclick = () => done(null);
    dialog.oncancel = () => done(null); // Esc
  });
  dialog.showModal();
  input.focus();
  return keyRequest;
}

function showPage() {
  const compare = location.hash === "#compare";
  $("page-chat").hidden = compare;
  $("page-compare").hidden = !compare;
  for (const [tab, current] of [[$("tab-chat"), !compare], [$("tab-compare"), compare]]) {
    if (current) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  document.title = `${compare ? "Compare" : "Chat"} · slmkit playground`;
}

async function loadModels(chat, compare) {
  const status = $("server-status");
  try {
    const models = await listModels();
    chat.setModels(models);
    compare.setModels(models);
    const local = models.filter((m) => !m.remote).length;
    const remote = models.length - local;
    status.textContent = `${local} local model${local === 1 ? "" : "s"}` +
      (remote ? ` · ${remote} remote` : "") + (apiKey() ? " · key set" : "");
    status.classList.remove("bad");
  } catch (error) {
    chat.setModels([]);
    compare.setModels([]);
    status.textContent = `Cannot list models: ${error.message}`;
    status.classList.add("bad");
  }
}

function main() {
  onKeyNeeded(askForKey);
  const chat = new ChatPage();
  const compare = new ComparePage();
  if (apiKey()) $("key-button").hidden = false;
  $("key-button").addEventListener("click", async () => {
    if ((await askForKey("Enter the key to use from now on.")) !== null) loadModels(chat, compare);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || $("key-dialog").open) return;
    if (location.hash === "#compare") compare.stop();
    else chat.stop();
  });
  document.querySelector(".skip-link").addEventListener("click", (event) => {
    event.preventDefault(); // the hash names the page; the link only moves focus
    $(location.hash === "#compare" ? "compare-input" : "chat-input").focus();
  });
  window.addEventListener("hashchange", showPage);
  showPage();
  loadModels(chat, compare);
}

main();

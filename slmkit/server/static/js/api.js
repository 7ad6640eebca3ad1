// The server's own OpenAI API, as the page uses it: the key, model list, streamed chat, timings.

const KEY_STORAGE = "slmkit.apiKey"; // sessionStorage: gone when the tab closes

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let askForKey = null; // (why) => Promise<string|null>, set by the page; null: nobody to ask

/** Who to ask for a key when the server answers 401. */
export function onKeyNeeded(ask) {
  askForKey = ask;
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const error = (await response.json()).error;
    message = typeof error === "string" ? error : (error && error.message) || message;
  } catch {
    // not JSON: the status line says what there is to say
  }
  return new ApiError(response.status, message);
}

/** fetch() with the key; a 401 asks for a key and tries again. */
async function call(path, init = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const headers = { ...(init.headers || {}) };
    if (init.body) headers["Content-Type"] = "application/json";
    if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
    let response;
    try {
      response = await fetch(path, { ...init, headers });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, `cannot reach the server (${error.message}): is slm serve still running?`);
    }
    if (response.status === 401 && askForKey && attempt < 5) {
      const refused = await errorOf(response);
      const key = await askForKey(apiKey() ? `The server refused the key: ${refused.message}` : refused.message);
      if (key === null) throw refused;
      continue;
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }
}

/** Chat models the server offers: `{id, vision, remote}`; `capabilities` is slmkit's extension
 * of /v1/models (a server without it: every model reads text only). */
export async function listModels() {
  const body = await (await call("/v1/models")).json();
  return (body.data || [])
    .filter((m) => !m.capabilities || m.capabilities.includes("completion"))
    .map((m) => ({
      id: m.id,
      vision: Boolean(m.capabilities && m.capabilities.includes("vision")),
      remote: m.owned_by !== undefined && m.owned_by !== "slmkit",
      provider: m.owned_by,
    }));
}

/** Stream one chat completion; `onDelta(text)` gets each piece. Resolves `{finish, usage}`;
 * an error before or during the stream rejects with an ApiError; `signal` aborts it (the server
 * then stops generating and frees the sequence). */
export async function streamChat(body, { signal, onDelta }) {
  const response = await call("/v1/chat/completions", {
    method: "POST",
    signal,
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let finish = null;
  let usage = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return { finish, usage };
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(500, chunk.error.message || String(chunk.error));
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) onDelta(choice.delta.content);
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
  }
  throw new ApiError(0, "the server closed the stream before the answer ended");
}

/** Time to first token and decode speed, measured here (what the user waits), with the
 * server's token counts once the answer ends. */
export class StreamTimer {
  constructor() {
    this.sent = performance.now();
    this.first = null;
    this.last = null;
    this.pieces = 0;
  }

  piece() {
    const now = performance.now();
    if (this.first === null) this.first = now;
    this.last = now;
    this.pieces += 1;
  }

  /** Plain numbers, kept with the message. */
  stats(usage = null, finish = null) {
    const tokens = usage ? usage.completion_tokens : this.pieces;
    const decodeSeconds = this.first === null ? 0 : ((this.last ?? this.first) - this.first) / 1000;
    return {
      ttft_ms: this.first === null ? null : Math.round(this.first - this.sent),
      // A burst (a remote answer arriving in one packet) has no meaningful rate.
      tokens_per_second: tokens > 1 && decodeSeconds >= 0.05 ? (tokens - 1) / decodeSeconds : null,
      completion_tokens: tokens,
      prompt_tokens: usage ? usage.prompt_tokens : null,
      finish,
      exact: Boolean(usage),
    };
  }
}

const FINISH_WORDS = { stop: "finished", length: "hit max tokens", stopped: "stopped by you" };

/** "TTFT 85 ms · 63.2 tok/s · 54 tokens · prompt 31 · finished" */
export function formatStats(s) {
  if (!s) return "";
  const parts = [];
  if (s.ttft_ms !== null && s.ttft_ms !== undefined) parts.push(`TTFT ${s.ttft_ms} ms`);
  if (s.tokens_per_second) parts.push(`${s.tokens_per_second.toFixed(1)} tok/s`);
  parts.push(`${s.exact ? "" : "~"}${s.completion_tokens} token${s.completion_tokens === 1 ? "" : "s"}`);
  if (s.prompt_tokens !== null && s.prompt_tokens !== undefined) parts.push(`prompt ${s.prompt_tokens}`);
  if (s.finish) parts.push(FINISH_WORDS[s.finish] || s.finish);
  return parts.join(" · ");
}

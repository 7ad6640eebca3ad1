// Markdown to DOM nodes, for model answers. Safe by construction: text only ever enters the page
// through createTextNode / textContent, never innerHTML, so markup in an answer shows as text.
// Covers what small models write: fenced code, headings, lists, quotes, tables, rules, and inline
// code, bold, italic, strike-through and http(s) links. An unclosed fence (an answer still
// streaming) is shown as code so far.

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const BULLET = /^(\s*)[-*+]\s+(.*)$/;
const NUMBERED = /^(\s*)(\d{1,9})[.)]\s+(.*)$/;
const TABLE_SEPARATOR = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The whole answer as a fragment of block elements. */
export function renderMarkdown(source) {
  const lines = String(source).replace(/\r\n?/g, "\n").split("\n");
  const out = document.createDocumentFragment();
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(FENCE);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i += 1; // the closing fence (or past the end while streaming)
      out.append(codeBlock(body.join("\n"), fence[2]));
      continue;
    }
    if (!line.trim()) { i += 1; continue; }
    const heading = line.match(HEADING);
    if (heading) {
      const level = Math.min(heading[1].length + 2, 6); // h1/h2 belong to the page
      out.append(inline(el(`h${level}`), heading[2]));
      i += 1;
      continue;
    }
    if (RULE.test(line)) { out.append(el("hr")); i += 1; continue; }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) body.push(lines[i++].match(QUOTE)[1]);
      const quote = el("blockquote");
      quote.append(renderMarkdown(body.join("\n")));
      out.append(quote);
      continue;
    }
    if (BULLET.test(line) || NUMBERED.test(line)) {
      i = list(lines, i, out);
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_SEPARATOR.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      i = table(lines, i, out);
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && !startsBlock(lines, i)) para.push(lines[i++]);
    if (!para.length) para.push(lines[i++]);
    const p = el("p");
    para.forEach((text, n) => {
      if (n) p.append(el("br"));
      inline(p, text);
    });
    out.append(p);
  }
  return out;
}

function startsBlock(lines, i) {
  const line = lines[i];
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) ||
    BULLET.test(line) || NUMBERED.test(line) ||
    (line.includes("|") && i + 1 < lines.length && TABLE_SEPARATOR.test(lines[i + 1]) && lines[i + 1].includes("-"));
}

function codeBlock(text, language) {
  const figure = el("figure", "code-block");
  const bar = el("figcaption");
  bar.append(el("span", "code-language", language || "text"));
  const copy = el("button", "copy-code", "Copy code");
  copy.type = "button";
  copy.dataset.copy = "code";
  bar.append(copy);
  const pre = el("pre");
  const code = el("code", language ? `language-${language}` : "", text);
  pre.append(code);
  pre.tabIndex = 0; // long lines scroll: reachable by keyboard
  figure.append(bar, pre);
  return figure;
}

function list(lines, i, out) {
  const ordered = NUMBERED.test(lines[i]);
  const node = el(ordered ? "ol" : "ul");
  if (ordered) {
    const start = Number(lines[i].match(NUMBERED)[2]);
    if (start !== 1) node.start = start;
  }
  let item = null;
  while (i < lines.length) {
    const line = lines[i];
    const bullet = ordered ? line.match(NUMBERED) : line.match(BULLET);
    if (bullet) {
      const depth = bullet[1].length;
      const text = ordered ? bullet[3] : bullet[2];
      item = el("li");
      if (depth >= 2) item.className = "nested";
      inline(item, text);
      node.append(item);
      i += 1;
    } else if (item && line.trim() && /^\s{2,}/.test(line) && !FENCE.test(line)) {
      item.append(el("br"));
      inline(item, line.trim()); // a wrapped item continues, indented
      i += 1;
    } else if (!line.trim() && i + 1 < lines.length &&
               (ordered ? NUMBERED : BULLET).test(lines[i + 1])) {
      i += 1; // a loose list: blank lines between items
    } else {
      break;
    }
  }
  out.append(node);
  return i;
}

function cells(line) {
  let text = line.trim();
  if (text.startsWith("|")) text = text.slice(1);
  if (text.endsWith("|")) text = text.slice(0, -1);
  return text.split("|").map((c) => c.trim());
}

function table(lines, i, out) {
  const wrap = el("div", "table-wrap");
  wrap.tabIndex = 0;
  const tableNode = el("table");
  const head = el("thead");
  const headRow = el("tr");
  for (const c of cells(lines[i])) headRow.append(inline(el("th"), c));
  head.append(headRow);
  tableNode.append(head);
  const body = el("tbody");
  i += 2;
  while (i < lines.length && lines[i].includes("|") && lines[i].trim()) {
    const row = el("tr");
    for (const c of cells(lines[i])) row.append(inline(el("td"), c));
    body.append(row);
    i += 1;
  }
  tableNode.append(body);
  wrap.append(tableNode);
  out.append(wrap);
  return i;
}

// Inline spans, earliest match first; emphasis nests by recursion.
const INLINE = [
  { re: /`([^`\n]+)`/, make: (m) => el("code", "", m[1]) },
  { re: /\*\*(?=\S)([^*\n]*?\S)\*\*|__(?=\S)([^_\n]*?\S)__/, make: (m) => inline(el("strong"), m[1] ?? m[2]) },
  { re: /~~(?=\S)([^~\n]*?\S)~~/, make: (m) => inline(el("del"), m[1]) },
  { re: /\*(?=[^\s*])([^*\n]*?[^\s*])\*|(?<![\w])_(?=[^\s_])([^_\n]*?[^\s_])_(?![\w])/,
    make: (m) => inline(el("em"), m[1] ?? m[2]) },
  { re: /\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/, make: (m) => link(m[1], m[2]) },
  { re: /https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"]/, make: (m) => link(m[0], m[0]) },
];

function link(text, href) {
  const a = el("a");
  a.href = href; // only http(s) reaches here: no javascript: or data: links
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  a.textContent = text;
  return a;
}

/** Append `text` with its inline markup to `parent`; returns `parent`. */
export function inline(parent, text) {
  let rest = text;
  while (rest) {
    let best = null;
    for (const rule of INLINE) {
      const m = rule.re.exec(rest);
      if (m && (best === null || m.index < best.m.index)) best = { m, rule };
    }
    if (!best) {
      parent.append(document.createTextNode(rest));
      break;
    }
    if (best.m.index) parent.append(document.createTextNode(rest.slice(0, best.m.index)));
    parent.append(best.rule.make(best.m));
    rest = rest.slice(best.m.index + best.m[0].length);
  }
  return parent;
}

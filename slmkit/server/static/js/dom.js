// Small DOM helpers the pages share.

export function el(tag, className = "", text = undefined) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function button(label, className = "ghost small", onClick = null) {
  const b = el("button", className, label);
  b.type = "button";
  if (onClick) b.addEventListener("click", onClick);
  return b;
}

/** Copy to the clipboard; the fallback serves pages served over plain http to another host,
 * where navigator.clipboard does not exist. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // permission refused: try the old way
    }
  }
  const area = el("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  return ok;
}

/** Show "Copied" on the button for a moment. */
export async function copyWithFeedback(buttonNode, text) {
  const label = buttonNode.textContent;
  buttonNode.textContent = (await copyText(text)) ? "Copied" : "Copy failed";
  setTimeout(() => { buttonNode.textContent = label; }, 1500);
}

/** A polite message for screen readers. */
export function announce(message) {
  const node = document.getElementById("announcer");
  node.textContent = "";
  setTimeout(() => { node.textContent = message; }, 50);
}

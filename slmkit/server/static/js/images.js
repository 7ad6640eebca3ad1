// Images for vision models: picked, pasted or dropped; kept as data URLs (what OpenAI's
// image_url parts and this server take) and shown as thumbnails.

// The server takes bodies up to 8 MiB and base64 adds a third: a bigger picture is scaled down
// (as vision models do themselves; Phi-3.5-vision crops to 336-pixel tiles anyway).
const MAX_BYTES = 3 * 1024 * 1024;
const MAX_SIDE = 2048;

function readAsDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

async function shrink(file) {
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  return canvas.toDataURL("image/jpeg", 0.9);
}

/** A data URL for an image file, scaled down when it is large. */
export async function imageDataUrl(file) {
  if (!file.type.startsWith("image/")) throw new Error(`${file.name || "that file"} is not an image`);
  if (file.size <= MAX_BYTES) {
    const bitmap = await createImageBitmap(file).catch(() => null);
    if (bitmap && Math.max(bitmap.width, bitmap.height) <= MAX_SIDE) {
      bitmap.close();
      return readAsDataUrl(file);
    }
    if (!bitmap) throw new Error(`${file.name || "that image"} cannot be read as an image`);
    bitmap.close();
  }
  return shrink(file);
}

/** Thumbnails of `images` (`{url, name}`) into the list element `ul`; `onRemove(index)` adds a
 * remove button to each. */
export function renderThumbs(ul, images, onRemove = null) {
  ul.replaceChildren();
  images.forEach((image, index) => {
    const li = document.createElement("li");
    const img = document.createElement("img");
    img.src = image.url;
    img.alt = image.name ? `Image ${image.name}` : `Image ${index + 1}`;
    li.append(img);
    if (onRemove) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "thumb-remove";
      remove.textContent = "×";
      remove.setAttribute("aria-label", `Remove ${img.alt}`);
      remove.addEventListener("click", () => onRemove(index));
      li.append(remove);
    }
    ul.append(li);
  });
  ul.hidden = images.length === 0;
}

/** Wire a file input, paste and drag-and-drop on `zone` to `add(files)`. */
export function acceptImages({ zone, input, pasteTarget, add }) {
  input.addEventListener("change", () => {
    add([...input.files]);
    input.value = "";
  });
  pasteTarget.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData ? event.clipboardData.files : [])].filter((f) => f.type.startsWith("image/"));
    if (files.length) {
      event.preventDefault();
      add(files);
    }
  });
  zone.addEventListener("dragover", (event) => {
    if ([...event.dataTransfer.types].includes("Files")) {
      event.preventDefault();
      zone.classList.add("dropping");
    }
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dropping"));
  zone.addEventListener("drop", (event) => {
    zone.classList.remove("dropping");
    if (event.dataTransfer.files.length) {
      event.preventDefault();
      add([...event.dataTransfer.files]);
    }
  });
}

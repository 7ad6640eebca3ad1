// Browser storage that never throws: a full or disabled localStorage loses the copy, not the page.

export function load(key, fallback) {
  try {
    const text = localStorage.getItem(key);
    return text ? JSON.parse(text) : fallback;
  } catch {
    return fallback;
  }
}

/** True when saved; false when the browser refused (quota, privacy mode). */
export function save(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    return false;
  }
}

export function forget(key) {
  try {
    localStorage.removeItem(key);
  } catch {
    // nothing stored, nothing to forget
  }
}

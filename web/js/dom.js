// Small DOM helper shared by the pack's front-end extensions (no side effects at import).
/** Create a DOM element (browser only: touches `document` when called, not at import). */
export function el(tag, cls, parent, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

/* The page's elements: h() builds HTML, svg() builds chart parts, show() and patch() put them in place. */

export const $ = (selector, root = document) => root.querySelector(selector);
export const main = $("#main");

const SVG_NS = "http://www.w3.org/2000/svg";

// Elements given an event listener by h(): patch() replaces such an element whole when it changed, so
// that a listener never outlives the data its closure was made with.
const withListeners = new WeakSet();

const present = (kid) => kid !== null && kid !== undefined;

function appendKids(el, kids) {
  for (const kid of kids.flat()) {
    if (present(kid)) {
      el.append(kid instanceof Node ? kid : String(kid));
    }
  }
}

/* An HTML element: `text` sets its text, `on<event>` adds a listener, true/false/null add or leave out an attribute. */
export function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) {
      continue;
    }
    if (name.startsWith("on")) {
      el.addEventListener(name.slice(2), value);
      withListeners.add(el);
    } else if (name === "text") {
      el.textContent = value;
    } else {
      el.setAttribute(name, value === true ? "" : value);
    }
  }
  appendKids(el, kids);
  return el;
}

/* An SVG element (charts): attributes as given, `text` sets its text. */
export function svg(tag, attrs = {}, ...kids) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") {
      el.textContent = value;
    } else {
      el.setAttribute(name, value);
    }
  }
  appendKids(el, kids);
  return el;
}

/* Replaces everything in `el` (a new page, a new panel). */
export function show(el, ...kids) {
  el.replaceChildren(...kids.flat().filter(present));
}

const asNode = (kid) => (kid instanceof Node ? kid : document.createTextNode(String(kid)));

/* Same tag and attributes, no listener on either: the old element can take the new one's children. */
function sameShell(old, fresh) {
  return (
    old.nodeType === Node.ELEMENT_NODE &&
    fresh.nodeType === Node.ELEMENT_NODE &&
    !withListeners.has(old) &&
    !withListeners.has(fresh) &&
    old.cloneNode(false).isEqualNode(fresh.cloneNode(false))
  );
}

/* Makes `parent`'s children look like `kids` without replacing the nodes that did not change: an equal
   child is kept, a child that differs only inside is updated in place, any other is replaced. A list,
   a table or a chart refreshed this way keeps its unchanged rows as the same nodes, so the focus, a
   selection or a test's reference to them is never lost to a redraw that changed nothing. */
export function patch(parent, kids) {
  const fresh = kids.flat().filter(present).map(asNode);
  fresh.forEach((node, index) => {
    const old = parent.childNodes[index];
    if (old === undefined) {
      parent.append(node);
    } else if (old.isEqualNode(node)) {
      return;
    } else if (old.nodeType === Node.TEXT_NODE && node.nodeType === Node.TEXT_NODE) {
      old.data = node.data;
    } else if (sameShell(old, node)) {
      patch(old, [...node.childNodes]);
    } else {
      old.replaceWith(node);
    }
  });
  while (parent.childNodes.length > fresh.length) {
    parent.lastChild.remove();
  }
}

/* A page's heading; the router focuses it on a page change, so a screen reader announces the page. */
export const heading = (text) => h("h1", { text, tabindex: "-1" });

/* A selector that finds the focused control again after its part of the page was re-rendered. */
export function focusKey(el) {
  if (!el || el === document.body || el === main || !main.contains(el)) {
    return null;
  }
  if (el.id) {
    return `#${CSS.escape(el.id)}`;
  }
  if (el.name && el.value) {
    return `${el.tagName.toLowerCase()}[name="${CSS.escape(el.name)}"][value="${CSS.escape(el.value)}"]`;
  }
  const href = el.getAttribute("href");
  return href ? `a[href="${CSS.escape(href)}"]` : null;
}

/* Runs `render` and puts the keyboard focus back on the control that had it, if render replaced it. */
export function keepFocus(render) {
  const key = focusKey(document.activeElement);
  render();
  const el = key && main.querySelector(key);
  if (el && el !== document.activeElement) {
    el.focus({ preventScroll: true });
  }
}

/* Says `message` in the polite status region (a job's status change): written only when something happened. */
export function announce(message) {
  const region = $("#announce");
  region.textContent = "";
  setTimeout(() => {
    region.textContent = message;
  }, 50);
}

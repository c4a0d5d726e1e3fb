// Small DOM helpers shared by the pages: elements built from data (never from HTML strings, so
// names from the catalog cannot inject markup), outcome lines and buttons that report.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A line that says what an action did, or why it failed, where the user acted.
export function statusLine(attrs) {
  return h("p", { class: "status", role: "status", "aria-live": "polite", ...attrs });
}

export function say(line, text, kind) {
  line.className = `status ${kind || ""}`;
  line.setAttribute("role", kind === "error" ? "alert" : "status");
  line.textContent = text;
}

// Run `action` from a button: disabled while it runs, its outcome (or error) on `line`.
export async function act(button, line, action, success) {
  button.disabled = true;
  say(line, "Working…");
  try {
    const result = await action();
    say(line, typeof success === "function" ? success(result) : success || "Done.", "ok");
    return result;
  } catch (err) {
    say(line, `Failed: ${err.message}`, "error");
    return undefined;
  } finally {
    if (button.isConnected) button.disabled = false;
  }
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind || text}` }, text.replace(/_/g, " ").toLowerCase());
}

export function field(label, input) {
  return h("label", {}, label, input);
}

export function select(name, options, value) {
  return h("select", { name },
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
}

export function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, err.message);
}

// Refresh at most every `ms`, however many events arrive meanwhile.
export function debounce(fn, ms) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn(); }, ms);
  };
}

// A list redrawn by live updates keeps each item's outcome line (the same element, put back)
// and the keyboard focus (the control with the same data-key).
const keptLines = new Map();
export function keptLine(key) {
  let line = keptLines.get(key);
  if (!line) {
    line = statusLine({ "data-line": key });
    keptLines.set(key, line);
  }
  return line;
}

export async function redraw(container, build) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.key : null;
  await build();
  if (key) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

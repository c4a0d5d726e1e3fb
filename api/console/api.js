// The console's one client for the API and its live events. Every call goes to this origin
// with the session cookie; an error answer becomes an ApiFailure carrying the API's own words.

export class ApiFailure extends Error {
  constructor(status, body) {
    super(describe(status, body));
    this.status = status;
    this.code = body && body.code;
    this.body = body || {};
  }
}

function describe(status, body) {
  let text = (body && (body.error || body.message)) || `the server answered ${status}`;
  const resets = body && body.limits && body.limits.resets_at;
  if (status === 429 && resets) text += ` (resets at ${when(resets)})`;
  return text;
}

export async function call(method, path, body) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new ApiFailure(0, { error: "the server cannot be reached; check your connection" });
  }
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    if (response.status === 401 && path !== "/v1/auth/login") signedOut();
    throw new ApiFailure(response.status, data);
  }
  return data;
}

export const get = (path, query) => call("GET", path + queryString(query));
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);
export const del = (path) => call("DELETE", path);
export const patch = (path, body) => call("PATCH", path, body);
export const put = (path, body) => call("PUT", path, body);

export function queryString(query) {
  if (!query) return "";
  const pairs = Object.entries(query).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return pairs.length ? "?" + new URLSearchParams(pairs).toString() : "";
}

export const enc = encodeURIComponent;

// -- the session -----------------------------------------------------------------------------

let onSignedOut = () => {};
export function whenSignedOut(handler) { onSignedOut = handler; }
function signedOut() { onSignedOut(); }

// -- live events (SPEC §14): one EventSource; the browser resumes it with Last-Event-ID ---------

const EVENT_NAMES = [
  "hello", "resync", "request.created", "request.progress", "request.completed",
  "request.failed", "request.cancelled", "queue.item", "queue.paused", "queue.resumed",
  "capacity", "job.started", "job.finished", "catalog.updated", "inbox",
];
let source = null;
const listeners = new Set();

export function listen(handler) {
  listeners.add(handler);
  return () => listeners.delete(handler);
}

export function openEvents(onState) {
  closeEvents();
  source = new EventSource("/v1/events", { withCredentials: true });
  source.onopen = () => onState("live");
  source.onerror = () => onState(source && source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  for (const name of EVENT_NAMES) {
    source.addEventListener(name, (event) => {
      let data = null;
      try { data = JSON.parse(event.data); } catch (err) { data = null; }
      for (const handler of listeners) handler(name, data);
    });
  }
}

export function closeEvents() {
  if (source) source.close();
  source = null;
}

// -- words for times ---------------------------------------------------------------------------

export function when(unixSeconds) {
  if (unixSeconds === null || unixSeconds === undefined) return "—";
  const date = new Date(unixSeconds * 1000);
  const sameDay = date.toDateString() === new Date().toDateString();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return sameDay ? time : `${date.toLocaleDateString()} ${time}`;
}

export function whenIso(text) {
  return text ? when(Date.parse(text) / 1000) : "—";
}

// The console's shell: the session, the navigation by permission, hash routes to page modules
// (one per page), the live event stream that lets the shown page refresh itself, and the inbox's
// unread count in the navigation (kept live by the `inbox` event).

import * as api from "./api.js";
import { h, replace, errorBox, debounce } from "./ui.js";
import * as signin from "./pages/signin.js";
import * as catalog from "./pages/catalog.js";
import * as search from "./pages/search.js";
import * as requests from "./pages/requests.js";
import * as queue from "./pages/queue.js";
import * as failed from "./pages/failed.js";
import * as activity from "./pages/activity.js";
import * as audit from "./pages/audit.js";
import * as jobs from "./pages/jobs.js";
import * as users from "./pages/users.js";
import * as inbox from "./pages/inbox.js";
import * as notifyFailures from "./pages/notify_failures.js";

// [hash prefix, page, label in the navigation, permission needed (null: any signed-in user),
//  whether it needs the inbox's routes (they answer 503 without the download manager)]
const PAGES = [
  ["#/home", catalog.home, "Catalog", "AccessCatalog"],
  ["#/album/", catalog.album, null, "AccessCatalog"],
  ["#/artist/", catalog.artist, null, "AccessCatalog"],
  ["#/search", search, "Search", "RequestContent"],
  ["#/requests", requests, "My requests", "RequestContent"],
  ["#/inbox", inbox, "Inbox", null, true],
  ["#/admin/queue", queue, "Queue", "ViewAnalytics"],
  ["#/admin/failed", failed, "Failed", "ViewAnalytics"],
  ["#/admin/activity", activity, "Activity", "ViewAnalytics"],
  ["#/admin/audit", audit, "Audit log", "ViewAnalytics"],
  ["#/admin/jobs", jobs, "Jobs", "ServerAdmin"],
  ["#/admin/users", users, "Users", "ManagePermissions"],
  ["#/admin/notifications", notifyFailures, "Notification failures", "ServerAdmin", true],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const live = document.getElementById("live");
// inbox: null until known, false when its routes answer 503; unread: the count in the navigation.
const session = { user: null, permissions: new Set(), inbox: null, unread: 0 };
let current = null; // the shown page's handle: { refresh, onEvent, dispose }

function can(permission) { return session.permissions.has(permission); }

function allowed() {
  return PAGES.filter(([, , , perm, needsInbox]) =>
    (perm === null ? Boolean(session.user) : can(perm)) && !(needsInbox && session.inbox === false));
}

function landing() {
  if (can("RequestContent")) return "#/requests";
  const first = allowed().find(([, , label]) => label);
  return first ? first[0] : "#/home";
}

function drawShell() {
  replace(nav, allowed().filter(([, , label]) => label).map(([hash, , label]) =>
    h("a", { href: hash, "aria-current": location.hash.startsWith(hash) ? "page" : null },
      label, hash === "#/inbox" ? h("span", { class: "count", id: "inbox-count" }) : null)));
  setUnread(session.unread);
  if (!session.user) { replace(who); return; }
  replace(who, h("span", {}, session.user),
    h("button", { type: "button", class: "link", id: "sign-out", onclick: signOut }, "Sign out"));
}

async function show() {
  if (current && current.dispose) current.dispose();
  current = null;
  drawShell();
  if (!session.user) {
    current = signin.render(main, { signedIn });
    return;
  }
  const hash = location.hash || "";
  const found = allowed().find(([prefix]) => hash.startsWith(prefix));
  if (!found) { location.replace(landing()); return; }
  const [prefix, page, label] = found;
  document.title = `${label || "Catalog"} · Pezzottify`;
  replace(main, h("p", {}, "Loading…"));
  try {
    current = (await page.render(main, { can, setUnread, user: session.user, arg: decodeURIComponent(hash.slice(prefix.length)) })) || null;
  } catch (err) {
    replace(main, errorBox(err));
  }
}

async function signedIn(data) {
  session.user = data.user_handle;
  session.permissions = new Set(data.permissions);
  await loadUnread();
  api.openEvents(showState);
  if (!location.hash || location.hash === "#/signin") location.hash = landing();
  else await show();
  main.focus();
}

async function signOut() {
  try { await api.post("/v1/auth/logout"); } catch (err) { /* the session may be gone already */ }
  forget();
  live.textContent = "Signed out.";
}

function forget() {
  api.closeEvents();
  session.user = null;
  session.permissions = new Set();
  session.inbox = null;
  session.unread = 0;
  show();
}

// The unread count beside "Inbox", changed in place (a redrawn navigation would lose the focus).
function setUnread(count) {
  session.unread = count;
  const badge = document.getElementById("inbox-count");
  if (!badge) return;
  badge.textContent = count ? String(count) : "";
  badge.dataset.unread = String(count);
  badge.hidden = !count;
  badge.parentElement.setAttribute("aria-label", count ? `Inbox, ${count} unread` : "Inbox");
}

async function loadUnread() {
  try {
    const data = await api.get("/v1/user/inbox", { unread: "true", limit: 1 });
    session.inbox = true;
    setUnread(data.unread);
  } catch (err) {
    if (err.status !== 503) return; // a passing failure: keep the count shown
    session.inbox = false; // no download manager: no inbox; its pages leave the navigation
    drawShell();
  }
}

function showState(state) {
  document.body.dataset.events = state;
  if (state === "reconnecting") live.textContent = "Live updates interrupted; reconnecting…";
  else if (state === "live") live.textContent = "";
}

// One refresh of the shown page per burst of events; a page may look at the event itself.
const refresh = debounce(() => current && current.refresh && current.refresh(), 150);
const recount = debounce(() => session.user && loadUnread(), 150);
api.listen((name, data) => {
  // On `hello` too: a stream opened afresh replays nothing, so an item that landed between the
  // count read at sign-in and the stream's opening is counted then.
  if (name === "inbox" || name === "resync" || name === "hello") recount();
  if (name === "hello") return;
  if (current && current.onEvent && current.onEvent(name, data) === false) return;
  refresh();
});
api.whenSignedOut(() => { if (session.user) forget(); });

window.addEventListener("hashchange", show);

(async () => {
  try {
    await signedIn(await api.get("/v1/auth/session"));
  } catch (err) {
    if (err.status !== 401) live.textContent = err.message;
    session.user = null;
    show();
  }
})();

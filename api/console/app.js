// The console's shell: the session, the navigation by permission, hash routes to page modules
// (one per page), and the live event stream that lets the shown page refresh itself.

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

// [hash prefix, page, label in the navigation, permission needed]
const PAGES = [
  ["#/home", catalog.home, "Catalog", "AccessCatalog"],
  ["#/album/", catalog.album, null, "AccessCatalog"],
  ["#/artist/", catalog.artist, null, "AccessCatalog"],
  ["#/search", search, "Search", "RequestContent"],
  ["#/requests", requests, "My requests", "RequestContent"],
  ["#/admin/queue", queue, "Queue", "ViewAnalytics"],
  ["#/admin/failed", failed, "Failed", "ViewAnalytics"],
  ["#/admin/activity", activity, "Activity", "ViewAnalytics"],
  ["#/admin/audit", audit, "Audit log", "ViewAnalytics"],
  ["#/admin/jobs", jobs, "Jobs", "ServerAdmin"],
  ["#/admin/users", users, "Users", "ManagePermissions"],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const live = document.getElementById("live");
const session = { user: null, permissions: new Set() };
let current = null; // the shown page's handle: { refresh, onEvent, dispose }

function can(permission) { return session.permissions.has(permission); }

function allowed() { return PAGES.filter(([, , , perm]) => can(perm)); }

function landing() {
  if (can("RequestContent")) return "#/requests";
  const first = allowed().find(([, , label]) => label);
  return first ? first[0] : "#/home";
}

function drawShell() {
  replace(nav, allowed().filter(([, , label]) => label).map(([hash, , label]) =>
    h("a", { href: hash, "aria-current": location.hash.startsWith(hash) ? "page" : null }, label)));
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
    current = (await page.render(main, { can, user: session.user, arg: decodeURIComponent(hash.slice(prefix.length)) })) || null;
  } catch (err) {
    replace(main, errorBox(err));
  }
}

async function signedIn(data) {
  session.user = data.user_handle;
  session.permissions = new Set(data.permissions);
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
  show();
}

function showState(state) {
  document.body.dataset.events = state;
  if (state === "reconnecting") live.textContent = "Live updates interrupted; reconnecting…";
  else if (state === "live") live.textContent = "";
}

// One refresh of the shown page per burst of events; a page may look at the event itself.
const refresh = debounce(() => current && current.refresh && current.refresh(), 150);
api.listen((name, data) => {
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

// The inbox: what the server told the user (a request of theirs completed or failed), newest
// first with the unread ones marked; mark one or all read; each item links to its request. Every
// answer sets the count in the navigation. Below it, where else the user is told (notifications.js).

import * as api from "../api.js";
import { h, replace, keptLine, redraw, act, badge, errorBox } from "../ui.js";
import { settingsPanel } from "./notifications.js";

const PAGE = 50;
const EVENT_WORDS = { "request.completed": "Request completed", "request.failed": "Request failed" };
// One outcome line above the list: with "Unread only", an item marked read leaves the list.
const outcome = keptLine("inbox-outcome");

export async function render(main, { can, setUnread }) {
  const unreadOnly = h("input", { type: "checkbox", name: "unread", id: "inbox-unread-only" });
  const markAll = h("button", { type: "button", id: "mark-all", "data-key": "mark-all" }, "Mark all read");
  const summary = h("p", { class: "muted", id: "inbox-summary" });
  const list = h("ul", { class: "cards", id: "inbox-items" });
  const pager = h("div", { class: "row" });
  const box = h("div", {}, summary, list, pager);
  const settings = h("section", { id: "notifications", "aria-labelledby": "notifications-title" });
  let offset = 0;
  outcome.id = "inbox-outcome";
  replace(main, h("h1", {}, "Inbox"),
    h("div", { class: "row" }, h("label", { class: "check" }, unreadOnly, "Unread only"), markAll),
    outcome, box, settings);

  const refresh = () => redraw(box, async () => {
    try {
      const data = await api.get("/v1/user/inbox", { unread: unreadOnly.checked ? "true" : "", limit: PAGE, offset });
      setUnread(data.unread);
      summary.textContent = data.unread ? `${data.unread} unread` : "Everything is read.";
      replace(list, data.items.length ? data.items.map((item) => card(item, can("RequestContent"), markOne))
        : h("li", { class: "card" }, offset ? "No older items." : unreadOnly.checked ? "Nothing unread."
          : "Nothing yet. When a request of yours completes or fails, it is told here."));
      drawPager(data.items.length === PAGE);
    } catch (err) {
      replace(list, h("li", {}, errorBox(err)));
    }
  });

  function drawPager(more) {
    const newer = h("button", { type: "button", "data-key": "newer", disabled: offset === 0 }, "Newer");
    const older = h("button", { type: "button", "data-key": "older", disabled: !more }, "Older");
    newer.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); refresh(); });
    older.addEventListener("click", () => { offset += PAGE; refresh(); });
    replace(pager, offset || more ? [newer, older] : null);
  }

  // The marked item is redrawn without its button: the keyboard focus goes to the item (or the
  // one now in its place, when "Unread only" took it away).
  async function markOne(button, item) {
    const at = [...list.children].findIndex((li) => li.dataset.id === String(item.id));
    const res = await act(button, outcome, () => api.post("/v1/user/inbox/read", { ids: [item.id] }),
      `Marked read: ${item.title}.`);
    if (!res) return;
    setUnread(res.unread);
    await refresh();
    const again = list.querySelector(`[data-id="${item.id}"]`) || list.children[Math.min(at, list.children.length - 1)];
    (again && again.dataset.id ? again : main).focus();
  }

  markAll.addEventListener("click", async () => {
    const res = await act(markAll, outcome, () => api.post("/v1/user/inbox/read", { all: true }),
      (r) => r.marked ? `Marked ${r.marked} item${r.marked === 1 ? "" : "s"} read.` : "Nothing was unread.");
    if (res) { setUnread(res.unread); refresh(); }
  });
  unreadOnly.addEventListener("change", () => { offset = 0; refresh(); });

  await refresh();
  settingsPanel(settings);
  return { refresh, onEvent: (name) => name === "inbox" || name === "resync" };
}

function card(item, canRequest, markOne) {
  const unread = !item.read;
  const mark = unread ? h("button", { type: "button", class: "mark-read", "data-key": `read-${item.id}`,
    "aria-label": `Mark read: ${item.title}, ${item.body}` }, "Mark read") : null;
  if (mark) mark.addEventListener("click", () => markOne(mark, item));
  const link = item.request_id && canRequest
    ? h("a", { href: `#/requests/${api.enc(item.request_id)}`, class: "to-request" }, "Open in My requests") : null;
  return h("li", { class: `card inbox-item${unread ? " unread" : ""}`, "data-id": item.id, "data-read": String(item.read), tabindex: "-1" },
    h("h3", {}, item.title),
    h("div", { class: "muted" }, unread ? badge("unread", "unread") : null,
      `${EVENT_WORDS[item.event] || item.event} · ${api.when(item.created_at)}`),
    h("p", {}, item.body),
    link || mark ? h("div", { class: "row" }, link, mark) : null);
}

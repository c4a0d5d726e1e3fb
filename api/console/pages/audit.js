// The queue's audit log, newest first, filtered by user, event type or item, a page at a time.

import * as api from "../api.js";
import { h, replace, field, select, errorBox } from "../ui.js";

const EVENTS = ["", "REQUEST_CREATED", "DOWNLOAD_STARTED", "CHILDREN_CREATED", "DOWNLOAD_COMPLETED",
  "DOWNLOAD_FAILED", "RETRY_SCHEDULED", "ADMIN_RETRY", "WATCHDOG_QUEUED", "WATCHDOG_SCAN_STARTED",
  "WATCHDOG_SCAN_COMPLETED", "RECOVERED_AFTER_RESTART", "REQUEST_CANCELLED", "PRIORITY_CHANGED",
  "QUEUE_PAUSED", "QUEUE_RESUMED", "WATCHDOG_GAVE_UP"];
const PAGE = 50;

export async function render(main) {
  const user = h("input", { type: "text", name: "user" });
  const item = h("input", { type: "text", name: "queue_item_id" });
  const type = select("event_type", EVENTS.map((e) => [e, e ? e.toLowerCase().replace(/_/g, " ") : "any event"]), "");
  const form = h("form", { class: "inline", id: "audit-filters" }, field("User", user), field("Event", type),
    field("Item id", item), h("button", { type: "submit" }, "Apply"));
  const body = h("div", { id: "audit" });
  let offset = 0;
  replace(main, h("h1", {}, "Audit log"), form, body);

  async function refresh() {
    try {
      const data = await api.get("/v1/download/admin/audit", { user: user.value.trim(), event_type: type.value,
        queue_item_id: item.value.trim(), limit: PAGE, offset });
      const older = h("button", { type: "button", disabled: !data.has_more }, "Older");
      const newer = h("button", { type: "button", disabled: offset === 0 }, "Newer");
      older.addEventListener("click", () => { offset += PAGE; refresh(); });
      newer.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); refresh(); });
      replace(body, h("p", { class: "muted" }, `${data.total_count} entries`),
        h("div", { class: "scroll" }, h("table", {},
          h("thead", {}, h("tr", {}, ["When", "Event", "Item", "User", "Details"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, data.entries.map((e) => h("tr", {},
            h("td", {}, api.when(e.timestamp)), h("td", {}, e.event_type.toLowerCase().replace(/_/g, " ")),
            h("td", {}, `${(e.content_type || "").toLowerCase()} ${e.content_id || ""}`),
            h("td", {}, e.user || e.request_source || ""),
            h("td", {}, e.details ? JSON.stringify(e.details) : "")))))),
        h("div", { class: "row" }, newer, older));
    } catch (err) {
      replace(body, errorBox(err));
    }
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); offset = 0; refresh(); });
  await refresh();
  return { refresh: () => offset === 0 && refresh(), onEvent: (name) => name === "queue.item" || name.startsWith("queue.") };
}

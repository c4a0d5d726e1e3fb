// Failed items, newest failure first, with the reason in words and a retry for each.

import * as api from "../api.js";
import { h, replace, keptLine, redraw, badge, errorBox } from "../ui.js";

// A retried item leaves this list at once, so its outcome is said above the list.
const outcome = keptLine("failed-outcome");
import { retryButton } from "./queue.js";

export async function render(main, { can }) {
  const total = h("p", { class: "muted", id: "failed-total" });
  const list = h("ul", { class: "cards", id: "failed-items" });
  outcome.id = "failed-outcome";
  replace(main, h("h1", {}, "Failed items"), outcome, total, list);
  const refresh = () => redraw(list, async () => {
    try {
      const data = await api.get("/v1/download/admin/failed", { limit: 100 });
      total.textContent = `${data.total} failed item${data.total === 1 ? "" : "s"}`;
      replace(list, data.items.length ? data.items.map((item) => card(item, can("EditCatalog")))
        : h("li", { class: "card" }, "Nothing has failed."));
    } catch (err) {
      replace(list, h("li", {}, errorBox(err)));
    }
  });
  await refresh();
  return { refresh, onEvent: (name) => name === "queue.item" };
}

function card(item, edit) {
  const line = outcome;
  return h("li", { class: "card failed-item", "data-id": item.id },
    h("h3", {}, item.content_name || item.content_id),
    h("div", { class: "muted" }, [item.artist_name, item.content_type.toLowerCase().replace("_", " "),
      item.requested_by ? `by ${item.requested_by}` : null, `failed ${api.when(item.completed_at || item.last_attempt_at)}`].filter(Boolean).join(" · ")),
    badge(item.status),
    item.failure ? h("p", { class: "error failure" }, `${item.failure.reason} ${item.failure.hint || ""}`) : null,
    item.error_message ? h("p", { class: "muted" }, `Detail (${item.error_type || "error"}): ${item.error_message}`) : null,
    edit ? h("div", { class: "row" }, retryButton(item, line)) : null);
}

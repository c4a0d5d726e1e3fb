// Notification failures (ServerAdmin): the notifications given up on after every retry, newest
// first, each with its last error (which names its targets masked, as the API gives it).
// No event tells of a failure (it comes minutes after the request's own events, once the retries
// are spent), so while this page is shown it also looks again every 30 s.

import * as api from "../api.js";
import { h, replace, redraw, errorBox } from "../ui.js";

const PAGE = 50;
const POLL_MS = 30000;

export async function render(main) {
  const total = h("p", { class: "muted", id: "notify-failures-total" });
  const list = h("ul", { class: "cards", id: "notify-failures" });
  const pager = h("div", { class: "row" });
  const box = h("div", {}, total, list, pager);
  let offset = 0;
  replace(main, h("h1", {}, "Notification failures"),
    h("p", { class: "muted" }, "Notifications that could not be delivered after every retry. "
      + "A user's was put in their inbox all the same."), box);

  const refresh = () => redraw(box, async () => {
    try {
      const data = await api.get("/v1/admin/notifications/failed", { limit: PAGE, offset });
      total.textContent = `${data.total} failed notification${data.total === 1 ? "" : "s"}`;
      replace(list, data.items.length ? data.items.map(card)
        : h("li", { class: "card" }, offset ? "No older failures." : "Every notification was delivered."));
      const newer = h("button", { type: "button", "data-key": "newer", disabled: offset === 0 }, "Newer");
      const older = h("button", { type: "button", "data-key": "older", disabled: offset + PAGE >= data.total }, "Older");
      newer.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); refresh(); });
      older.addEventListener("click", () => { offset += PAGE; refresh(); });
      replace(pager, data.total > PAGE ? [newer, older] : null);
    } catch (err) {
      replace(list, h("li", {}, errorBox(err)));
    }
  });
  await refresh();
  const timer = setInterval(refresh, POLL_MS);
  return { refresh, onEvent: (name) => name === "resync", dispose: () => clearInterval(timer) };
}

function card(item) {
  return h("li", { class: "card failed-notice", "data-id": item.id },
    h("h3", {}, item.title),
    h("div", { class: "muted" }, [item.event, item.user ? `for ${item.user}` : "for the admins",
      `failed ${api.when(item.failed_at)}`, `${item.attempts} attempt${item.attempts === 1 ? "" : "s"}`,
      item.request_id ? `request ${item.request_id}` : null].filter(Boolean).join(" · ")),
    h("p", {}, item.body),
    item.last_error ? h("p", { class: "error" }, `Last error: ${item.last_error}`) : null);
}

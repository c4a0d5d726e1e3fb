// My requests: the caller's requests with live progress, why each one waits and when it should
// start or finish, why one failed, and a cancel. Also the limits panel the search page shows.
// `#/requests/<id>` (the inbox's links) marks that request and takes the focus to it; one older
// than the list shows is fetched on its own and shown first.

import * as api from "../api.js";
import { h, replace, keptLine, redraw, act, badge, errorBox } from "../ui.js";

const WAIT_WORDS = {
  queued: "Waiting for the requests ahead of it",
  capacity: "Waiting: the server's download capacity is used up",
  paused: "Waiting: an admin paused the queue",
  retry: "Waiting to retry after an error",
  downloader_busy: "Waiting: the downloader is busy",
};
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

export async function limitsPanel(section) {
  try {
    const { user, global } = await api.get("/v1/download/limits");
    replace(section, h("dl", { class: "kv" },
      h("dt", {}, "Requests today"), h("dd", { id: "limit-today" }, `${user.requests_today} of ${user.max_per_day}`),
      h("dt", {}, "In the queue"), h("dd", {}, `${user.in_queue} of ${user.max_queue}`),
      h("dt", {}, "You can request"), h("dd", {}, user.can_request ? "yes" : `no — resets at ${api.when(user.resets_at)}`),
      h("dt", {}, "Server capacity"), h("dd", {}, global.at_capacity
        ? `full until ${api.when(global.resets_at)}`
        : `${global.albums_this_hour}/${global.max_per_hour} albums this hour, ${global.albums_today}/${global.max_per_day} today`)));
  } catch (err) {
    replace(section, errorBox(err));
  }
}

export function waitWords(wait) {
  if (!wait) return null;
  const base = WAIT_WORDS[wait.reason] || `Waiting (${wait.reason})`;
  return wait.until ? `${base} — until about ${api.when(wait.until)}` : base;
}

export function progressOf(item) {
  const p = item.progress;
  if (!p || !p.total_children) return null;
  const done = p.completed + p.failed + (p.cancelled || 0);
  return h("div", {},
    h("progress", { max: p.total_children, value: done, "aria-label": `${item.content_name} progress` }),
    h("div", { class: "muted progress-text" },
      `${p.completed} of ${p.total_children} files done` + (p.failed ? `, ${p.failed} failed` : "") +
      (p.in_progress ? `, ${p.in_progress} downloading` : "")));
}

export function itemFacts(item) {
  return [
    item.wait ? h("p", { class: "wait" }, waitWords(item.wait)) : null,
    item.status === "PENDING" && item.queue_position ? h("p", { class: "muted" }, `Position ${item.queue_position} in the queue`) : null,
    item.estimated_start_at ? h("p", { class: "muted" }, `Estimated start: about ${api.when(item.estimated_start_at)} (an estimate)`) : null,
    item.estimated_completion_at ? h("p", { class: "muted" }, `Estimated completion: about ${api.when(item.estimated_completion_at)} (an estimate)`) : null,
    item.failure ? h("p", { class: "error failure" }, `${item.failure.reason} ${item.failure.hint || ""}`) : null,
  ];
}

export async function render(main, { arg } = {}) {
  const chosen = arg && arg.startsWith("/") ? arg.slice(1) : null;
  const limits = h("section", { id: "limits", "aria-label": "Your limits" });
  const list = h("ul", { class: "cards", id: "my-requests" });
  replace(main, h("h1", {}, "My requests"), limits, list);

  const refresh = () => redraw(list, async () => {
    try {
      const data = await api.get("/v1/download/my-requests", { limit: 100 });
      const items = data.requests;
      if (chosen && !items.some((item) => item.id === chosen)) items.unshift(await alone(chosen));
      if (!items.length) {
        replace(list, h("li", { class: "card" }, "No requests yet. ", h("a", { href: "#/search" }, "Search for an album"), "."));
      } else {
        replace(list, items.map((item) => item.unshown ? h("li", {}, errorBox(item.unshown)) : card(item, item.id === chosen)));
      }
    } catch (err) {
      replace(list, h("li", {}, errorBox(err)));
    }
    await limitsPanel(limits);
  });
  await refresh();
  const mark = list.querySelector(".chosen");
  if (mark) { mark.scrollIntoView({ block: "center" }); mark.focus(); }
  return { refresh };
}

// The chosen request when the list leaves it out (older than its first page), or why not.
async function alone(id) {
  try {
    return await api.get(`/v1/download/request/${api.enc(id)}`);
  } catch (err) {
    return { unshown: { message: `The request you followed cannot be shown: ${err.message}` } };
  }
}

function card(item, chosen) {
  const line = keptLine(`request-${item.id}`);
  const cancel = TERMINAL.has(item.status) ? null
    : h("button", { type: "button", class: "danger", "data-key": `cancel-${item.id}`, "aria-label": `Cancel ${item.content_name}` }, "Cancel");
  if (cancel) {
    cancel.addEventListener("click", () => act(cancel, line,
      () => api.del(`/v1/download/request/${api.enc(item.id)}`), "Cancelled."));
  }
  return h("li", { class: `card request${chosen ? " chosen" : ""}`, "data-id": item.id, "data-status": item.status,
    tabindex: chosen ? "-1" : null, "aria-current": chosen ? "true" : null, "data-key": chosen ? "chosen" : null },
    h("h3", {}, item.status === "COMPLETED" ? h("a", { href: `#/album/${api.enc(item.content_id)}` }, item.content_name || item.content_id) : (item.content_name || item.content_id)),
    h("div", { class: "muted" }, [item.artist_name, `requested ${api.when(item.created_at)}`].filter(Boolean).join(" · ")),
    badge(item.status), progressOf(item), itemFacts(item),
    cancel ? h("div", { class: "row" }, cancel) : null, line);
}

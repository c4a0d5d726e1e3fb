// The admin queue: counts, pause and resume, every item with filters, and per item cancel,
// retry and priority; bulk actions show their dry-run count before they are confirmed.
// Priority and bulk controls appear only when the server has those routes (its OpenAPI says).

import * as api from "../api.js";
import { h, replace, statusLine, keptLine, redraw, say, act, badge, field, select, errorBox } from "../ui.js";
import { progressOf, itemFacts } from "./requests.js";

const STATUSES = ["", "PENDING", "IN_PROGRESS", "RETRY_WAITING", "COMPLETED", "FAILED", "CANCELLED"];
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
const PRIORITIES = [1, 2, 3, 4, 5, 6, 7, 8, 9];
let routes = null;

// Which optional operator routes this server has, from its OpenAPI document (read once).
export async function serverRoutes() {
  if (routes) return routes;
  try {
    const doc = await api.get("/openapi.json");
    const has = (pattern, method) => Object.entries(doc.paths || {}).some(([path, ops]) => pattern.test(path) && ops[method]);
    routes = {
      priority: has(/^\/v1\/download\/admin\/item\/\{[^}]+\}$/, "patch"),
      bulk: has(/^\/v1\/download\/admin\/bulk$/, "post"),
    };
  } catch (err) {
    routes = { priority: false, bulk: false };
  }
  return routes;
}

export async function render(main, { can }) {
  const edit = can("EditCatalog");
  const optional = await serverRoutes();
  const stats = h("section", { id: "queue-stats", "aria-label": "Queue state" });
  const pauseLine = keptLine("pause");
  const status = select("status", STATUSES.map((s) => [s, s ? s.replace("_", " ").toLowerCase() : "any status"]), "");
  const user = h("input", { type: "text", name: "user", id: "filter-user" });
  const topLevel = h("input", { type: "checkbox", name: "top_level_only", checked: true, id: "filter-top" });
  const filters = h("form", { class: "inline", id: "queue-filters", "aria-label": "Filters" },
    field("Status", status), field("User", user), h("label", { class: "check" }, topLevel, "Requests only"),
    h("button", { type: "submit" }, "Apply"));
  const total = h("p", { class: "muted", id: "queue-total" });
  const list = h("ul", { class: "cards", id: "queue-items" });
  const bulk = optional.bulk && edit ? bulkPanel(() => ({ status: status.value, user: user.value.trim() })) : null;

  async function drawStats() {
    try {
      const s = await api.get("/v1/download/admin/stats");
      const paused = s.paused && s.paused.paused;
      const reason = h("input", { type: "text", name: "reason", id: "pause-reason", maxlength: 500 });
      const toggle = paused
        ? h("button", { type: "button", class: "primary", id: "resume", "data-key": "toggle" }, "Resume the queue")
        : h("button", { type: "button", class: "danger", id: "pause", "data-key": "toggle" }, "Pause the queue");
      toggle.addEventListener("click", () => act(toggle, pauseLine,
        () => paused ? api.post("/v1/download/admin/resume") : api.post("/v1/download/admin/pause", reason.value.trim() ? { reason: reason.value.trim() } : {}),
        paused ? "The queue is running again." : "The queue is paused: nothing new starts.").then(refresh));
      const q = s.queue;
      replace(stats,
        paused ? h("p", { class: "banner", id: "paused-banner" },
          `Paused by ${s.paused.paused_by || "an admin"} at ${api.when(s.paused.paused_at)}`, s.paused.reason ? `: ${s.paused.reason}` : "") : null,
        h("p", {}, `${q.pending} pending · ${q.in_progress} in progress · ${q.retry_waiting} waiting to retry · ${q.completed_today} completed and ${q.failed_today} failed today`),
        h("p", { class: "muted" }, s.capacity.at_capacity ? `At capacity until ${api.when(s.capacity.resets_at)}`
          : `Capacity: ${s.capacity.albums_this_hour}/${s.capacity.max_per_hour} albums this hour, ${s.capacity.albums_today}/${s.capacity.max_per_day} today`),
        edit ? h("div", { class: "row" }, paused ? null : field("Reason (optional)", reason), toggle) : null,
        pauseLine);
    } catch (err) {
      replace(stats, errorBox(err));
    }
  }

  async function drawItems() {
    try {
      const data = await api.get("/v1/download/admin/requests", {
        status: status.value, user: user.value.trim(), top_level_only: topLevel.checked ? "true" : "", limit: 100,
      });
      total.textContent = `${data.total} item${data.total === 1 ? "" : "s"}${data.total > data.items.length ? ` (showing ${data.items.length})` : ""}`;
      replace(list, data.items.length ? data.items.map((item) => card(item, edit, optional)) : h("li", { class: "card" }, "Nothing matches."));
    } catch (err) {
      replace(list, h("li", {}, errorBox(err)));
    }
  }

  const refresh = () => redraw(main, async () => { await drawStats(); await drawItems(); });
  filters.addEventListener("submit", (event) => { event.preventDefault(); drawItems(); });
  replace(main, h("h1", {}, "Download queue"), stats, h("h2", {}, "Items"), filters, bulk, total, list);
  await refresh();
  return { refresh };
}

function card(item, edit, optional) {
  const line = keptLine(`item-${item.id}`);
  const actions = h("div", { class: "row" });
  if (edit && !TERMINAL.has(item.status)) {
    const cancel = h("button", { type: "button", class: "danger", "data-key": `cancel-${item.id}`, "aria-label": `Cancel ${item.content_name || item.content_id}` }, "Cancel");
    cancel.addEventListener("click", () => act(cancel, line, () => api.del(`/v1/download/admin/item/${api.enc(item.id)}`), "Cancelled."));
    actions.append(cancel);
    if (optional.priority) {
      const choice = select("priority", PRIORITIES.map((p) => [String(p), String(p)]), String(item.priority));
      choice.setAttribute("aria-label", `Priority of ${item.content_name || item.content_id}`);
      const set = h("button", { type: "button", "data-key": `priority-${item.id}` }, "Set priority");
      set.addEventListener("click", () => act(set, line,
        () => api.patch(`/v1/download/admin/item/${api.enc(item.id)}`, { priority: Number(choice.value) }),
        (res) => `Priority is now ${res.priority}.`));
      actions.append(field("Priority (1 first)", choice), set);
    }
  }
  if (edit && item.status === "FAILED") actions.append(retryButton(item, line));
  return h("li", { class: "card queue-item", "data-id": item.id, "data-status": item.status },
    h("h3", {}, item.content_name || item.content_id),
    h("div", { class: "muted" }, [item.artist_name, item.content_type.toLowerCase().replace("_", " "),
      item.requested_by ? `by ${item.requested_by}` : item.request_source.toLowerCase(), `priority ${item.priority}`,
      `created ${api.when(item.created_at)}`].filter(Boolean).join(" · ")),
    badge(item.status), progressOf(item), itemFacts(item),
    item.error_message ? h("p", { class: "muted" }, `Detail: ${item.error_message}`) : null,
    actions, line);
}

export function retryButton(item, line) {
  const retry = h("button", { type: "button", class: "primary", "data-key": `retry-${item.id}`, "aria-label": `Retry ${item.content_name || item.content_id}` }, "Retry");
  retry.addEventListener("click", () => act(retry, line, () => api.post(`/v1/download/admin/retry/${api.enc(item.id)}`),
    (res) => `Retried ${item.content_name || item.content_id}: now ${res.status.replace("_", " ").toLowerCase()}.`));
  return retry;
}

function bulkPanel(currentFilter) {
  const action = select("action", [["retry", "Retry"], ["cancel", "Cancel"], ["set_priority", "Set priority"]], "retry");
  const priority = select("priority", PRIORITIES.map((p) => [String(p), String(p)]), "2");
  const count = h("button", { type: "submit", id: "bulk-count" }, "Count matching items");
  const confirm = h("button", { type: "button", class: "danger", id: "bulk-confirm", hidden: true }, "Confirm");
  const line = statusLine({ id: "bulk-status" });
  let pending = null;
  function body(dryRun) {
    const filter = Object.fromEntries(Object.entries(currentFilter()).filter(([, v]) => v));
    const data = { action: action.value, filter, dry_run: dryRun };
    if (action.value === "set_priority") data.priority = Number(priority.value);
    return data;
  }
  const form = h("form", { class: "card", id: "bulk", "aria-label": "Bulk action" },
    h("h2", {}, "Bulk action on the filtered items"),
    h("div", { class: "row" }, field("Action", action), field("Priority", priority), count, confirm), line);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    confirm.hidden = true;
    pending = body(true);
    if (!Object.keys(pending.filter).length) { say(line, "Choose a status or a user first: a bulk action never applies to everything.", "error"); return; }
    const res = await act(count, line, () => api.post("/v1/download/admin/bulk", pending),
      (r) => `${r.matched} item${r.matched === 1 ? "" : "s"} would change. Confirm to apply.`);
    if (res && res.matched) { confirm.hidden = false; confirm.focus(); }
  });
  confirm.addEventListener("click", async () => {
    const res = await act(confirm, line, () => api.post("/v1/download/admin/bulk", { ...pending, dry_run: false }),
      (r) => `Changed ${r.changed} of ${r.matched} item${r.matched === 1 ? "" : "s"}.`);
    if (res) confirm.hidden = true;
  });
  return form;
}

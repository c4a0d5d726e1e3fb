// Background jobs: what each does, when it ran and runs next; run now, cancel, and its history.

import * as api from "../api.js";
import { h, replace, keptLine, redraw, act, badge, errorBox } from "../ui.js";

export async function render(main) {
  const list = h("ul", { class: "cards", id: "jobs" });
  replace(main, h("h1", {}, "Background jobs"), list);
  const refresh = () => redraw(list, async () => {
    try {
      const data = await api.get("/v1/admin/jobs");
      replace(list, data.jobs.map(card));
    } catch (err) {
      replace(list, h("li", {}, errorBox(err)));
    }
  });
  await refresh();
  return { refresh, onEvent: (name) => name.startsWith("job.") };
}

function card(job) {
  const line = keptLine(`job-${job.id}`);
  const history = h("div");
  const run = h("button", { type: "button", class: "primary", "data-key": `run-${job.id}`, disabled: job.is_running }, "Run now");
  run.addEventListener("click", () => act(run, line, () => api.post(`/v1/admin/jobs/${api.enc(job.id)}/trigger`),
    (r) => `Started (run ${r.run_id}).`));
  const cancel = h("button", { type: "button", class: "danger", "data-key": `cancel-${job.id}`, disabled: !job.is_running }, "Cancel");
  cancel.addEventListener("click", () => act(cancel, line, () => api.post(`/v1/admin/jobs/${api.enc(job.id)}/cancel`), "Cancelling."));
  const show = h("button", { type: "button", "data-key": `history-${job.id}` }, "History");
  show.addEventListener("click", async () => {
    const data = await act(show, line, () => api.get(`/v1/admin/jobs/${api.enc(job.id)}/history`, { limit: 20 }),
      (d) => `${d.history.length} recent run${d.history.length === 1 ? "" : "s"}.`);
    if (data) replace(history, h("ul", {}, data.history.map((r) => h("li", {},
      `${api.whenIso(r.started_at)}: ${r.status} (${r.triggered_by})`, r.error_message ? ` — ${r.error_message}` : ""))));
  });
  const last = job.last_run;
  const when = job.schedule.cron || (job.schedule.interval_secs ? `every ${Math.round(job.schedule.interval_secs / 60)} min` : job.schedule.type);
  return h("li", { class: "card job", "data-id": job.id },
    h("h3", {}, job.name || job.id), h("p", { class: "muted" }, job.description),
    job.is_running ? badge("running", "IN_PROGRESS") : null,
    h("p", { class: "muted" }, `Schedule: ${when}. Last run: ${last ? `${api.whenIso(last.started_at)}, ${last.status}` : "never"}. Next: ${api.whenIso(job.next_run_at)}.`),
    h("div", { class: "row" }, run, cancel, show), line, history);
}

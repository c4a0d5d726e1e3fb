// Activity over the last 7 days: a bar per day (files completed, failures in red) drawn as SVG,
// with the same numbers in a table for screen readers and exact reading.

import * as api from "../api.js";
import { h, replace, errorBox } from "../ui.js";

const NS = "http://www.w3.org/2000/svg";
const DAY = 86400;

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) el.append(c);
  return el;
}

export async function render(main) {
  const body = h("div", { id: "activity" });
  replace(main, h("h1", {}, "Activity, last 7 days"), body);
  async function refresh() {
    try {
      const data = await api.get("/v1/download/admin/activity", { hours: 168 });
      const days = new Map();
      for (const bucket of data.hourly) {
        const day = bucket.hour - (bucket.hour % DAY);
        const sum = days.get(day) || { day, albums: 0, tracks: 0, images: 0, bytes: 0, failed: 0 };
        for (const key of ["albums", "tracks", "images", "bytes", "failed"]) sum[key] += bucket[key] || 0;
        days.set(day, sum);
      }
      const rows = [...days.values()].slice(-7);
      replace(body, chart(rows), table(rows, data.totals));
    } catch (err) {
      replace(body, errorBox(err));
    }
  }
  await refresh();
  return { refresh, onEvent: (name) => name === "queue.item" };
}

function label(day) {
  return new Date(day * 1000).toLocaleDateString([], { weekday: "short", timeZone: "UTC" });
}

function chart(rows) {
  const width = 320, height = 160, pad = 24, slot = (width - pad) / Math.max(rows.length, 1);
  const top = Math.max(1, ...rows.map((r) => r.tracks + r.failed));
  const bars = rows.flatMap((r, i) => {
    const x = pad + i * slot + slot * 0.15, w = slot * 0.7, scale = (height - 2 * pad) / top;
    const ok = r.tracks * scale, bad = r.failed * scale, base = height - pad;
    return [
      svg("rect", { class: "tracks-bar", x, y: base - ok, width: w, height: ok }),
      svg("rect", { class: "failed-bar", x, y: base - ok - bad, width: w, height: bad }),
      svg("text", { x: x + w / 2, y: height - 8, "text-anchor": "middle" }, label(r.day)),
      svg("text", { x: x + w / 2, y: base - ok - bad - 4, "text-anchor": "middle" }, String(r.tracks + r.failed)),
    ];
  });
  return svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "Files completed per day (blue) and failures (red) over the last 7 days" }, ...bars);
}

function table(rows, totals) {
  const mb = (b) => `${(b / 1048576).toFixed(1)} MB`;
  return h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, ["Day (UTC)", "Albums", "Tracks", "Images", "Failed", "Data"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, label(r.day)), h("td", {}, r.albums), h("td", {}, r.tracks),
      h("td", {}, r.images), h("td", {}, r.failed), h("td", {}, mb(r.bytes))))),
    h("tfoot", {}, h("tr", {}, h("th", { scope: "row" }, "Total"), h("td", {}, totals.albums), h("td", {}, totals.tracks),
      h("td", {}, totals.images), h("td", {}, totals.failed), h("td", {}, mb(totals.bytes))))));
}

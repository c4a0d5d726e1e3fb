// Search the downloader (albums or artists), see what is already here or queued, and request an
// album or an artist's discography. Cover art comes through the API's image relay.

import * as api from "../api.js";
import { h, replace, statusLine, say, act, badge, field, select } from "../ui.js";
import { limitsPanel } from "./requests.js";

export async function render(main, { arg }) {
  const params = new URLSearchParams(arg.replace(/^\?/, ""));
  const query = h("input", { type: "search", name: "q", id: "search-q", required: true, value: params.get("q") || "" });
  const type = select("type", [["album", "Albums"], ["artist", "Artists"]], params.get("type") || "album");
  type.id = "search-type";
  const line = statusLine({ id: "search-status" });
  const results = h("div", { id: "results" });
  const limits = h("section", { id: "limits", "aria-label": "Your limits" });
  const form = h("form", { class: "inline", role: "search", id: "search-form" },
    field("Search for", query), field("Type", type),
    h("button", { type: "submit", class: "primary" }, "Search"));

  async function run() {
    if (!query.value.trim()) return;
    say(line, "Searching…");
    try {
      const data = await api.get("/v1/download/search", { q: query.value.trim(), type: type.value });
      say(line, `${data.total} result${data.total === 1 ? "" : "s"}.`, "ok");
      replace(results, h("ul", { class: "cards" }, data.results.map((r) => resultCard(r, results))));
    } catch (err) {
      say(line, `Search failed: ${err.message}`, "error");
    }
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); run(); });
  replace(main, h("h1", {}, "Search and request"), limits, form, line, results);
  query.focus();
  await limitsPanel(limits);
  if (query.value) await run();
  return { refresh: () => limitsPanel(limits), onEvent: (name) => name.startsWith("request.") || name === "capacity" };
}

// A cover that cannot be shown leaves a plain square rather than a broken image.
function cover(url, name) {
  const blank = () => h("span", { class: "no-cover", "aria-hidden": "true" });
  if (!url) return blank();
  const img = h("img", { src: url, alt: `Cover of ${name}`, loading: "lazy" });
  img.addEventListener("error", () => img.replaceWith(blank()));
  return img;
}

function marks(r) {
  return [r.in_catalog ? badge("in catalog", "in-catalog") : null, r.in_queue ? badge("in queue", "in-queue") : null];
}

function resultCard(r, results) {
  const line = statusLine();
  const actions = h("div", { class: "row" });
  if (r.type === "album") {
    if (r.in_catalog) actions.append(h("a", { href: `#/album/${api.enc(r.id)}` }, "Open in the catalog"));
    const button = h("button", { type: "button", class: "primary", disabled: r.in_catalog || r.in_queue, "aria-label": `Request ${r.name}` }, "Request");
    button.addEventListener("click", () => act(button, line,
      () => api.post("/v1/download/request/album", { album_id: r.id, album_name: r.name, artist_name: r.artist_name || "Unknown artist" }),
      (res) => { button.disabled = true; return `Requested: position ${res.queue_position ?? "?"} in the queue. Follow it in My requests.`; }));
    actions.append(button);
  } else {
    const show = h("button", { type: "button", "aria-label": `Show the discography of ${r.name}` }, "Discography");
    const list = h("div");
    show.addEventListener("click", () => discography(r, list, line, show));
    actions.append(show);
    return h("li", { class: "card media" }, cover(r.image_url, r.name),
      h("div", {}, h("h3", {}, r.name), marks(r), actions, line, list));
  }
  return h("li", { class: "card media" }, cover(r.image_url, r.name),
    h("div", {}, h("h3", {}, r.name),
      h("div", { class: "muted" }, [r.artist_name, r.year].filter(Boolean).join(" · ")),
      marks(r), actions, line));
}

async function discography(artist, list, line, button) {
  const data = await act(button, line, () => api.get(`/v1/download/search/discography/${api.enc(artist.id)}`),
    (d) => `${d.albums.length} album${d.albums.length === 1 ? "" : "s"} by ${artist.name}.`);
  if (!data) return;
  const all = h("button", { type: "button", class: "primary" }, "Request the whole discography");
  const allLine = statusLine();
  all.addEventListener("click", () => act(all, allLine,
    () => api.post("/v1/download/request/discography", { artist_id: artist.id, artist_name: artist.name }),
    (res) => `Queued ${res.albums_queued} album${res.albums_queued === 1 ? "" : "s"}; skipped ${res.albums_skipped}` +
      (res.skipped && res.skipped.length ? ` (${res.skipped.map((s) => s.reason.replace("_", " ")).join(", ")})` : "") + "."));
  replace(list, h("div", { class: "row" }, all), allLine,
    h("ul", { class: "cards" }, data.albums.map((album) => resultCard({ ...album, type: "album", artist_name: album.artist_name || artist.name }, list))));
}


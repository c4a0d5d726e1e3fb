// The catalog: popular albums and artists, an album with its tracks and a player, an artist with
// their albums. Audio plays from the stream route with the session cookie.

import * as api from "../api.js";
import { h, replace, errorBox } from "../ui.js";

const image = (id, alt, cls) => id ? h("img", { src: `/v1/content/image/${api.enc(id)}`, alt, class: cls || "cover" }) : null;

export const home = {
  async render(main) {
    const body = h("div", { id: "popular" });
    replace(main, h("h1", {}, "Catalog"), body);
    async function refresh() {
      try {
        const data = await api.get("/v1/content/popular", { albums_limit: 20, artists_limit: 20 });
        replace(body,
          h("h2", {}, "Popular albums"),
          data.albums.length ? h("ul", {}, data.albums.map((a) => h("li", {}, h("a", { href: `#/album/${api.enc(a.id)}` }, a.name),
            a.artist_names && a.artist_names.length ? ` — ${a.artist_names.join(", ")}` : ""))) : h("p", { class: "muted" }, "Nothing played yet."),
          h("h2", {}, "Popular artists"),
          data.artists.length ? h("ul", {}, data.artists.map((a) => h("li", {}, h("a", { href: `#/artist/${api.enc(a.id)}` }, a.name))))
            : h("p", { class: "muted" }, "Nothing played yet."),
          h("p", { class: "muted" }, "Albums you requested open from My requests once they are complete."));
      } catch (err) {
        replace(body, errorBox(err));
      }
    }
    await refresh();
    return { refresh, onEvent: (name) => name === "catalog.updated" };
  },
};

export const album = {
  async render(main, { arg }) {
    const a = await api.get(`/v1/content/album/${api.enc(arg)}`);
    const player = h("audio", { controls: true, preload: "none", id: "player" });
    const now = h("p", { class: "muted", role: "status", "aria-live": "polite", id: "now-playing" });
    player.addEventListener("error", () => { now.textContent = "This track cannot be played."; });
    const tracks = h("ol", { class: "tracks" }, a.tracks.map((t) => {
      const playable = t.audio_available !== false;
      const play = h("button", { type: "button", disabled: !playable, "aria-label": `Play ${t.name}` }, "Play");
      play.addEventListener("click", () => {
        player.src = `/v1/content/stream/${api.enc(t.id)}`;
        now.textContent = `Playing ${t.name}`;
        player.play().catch((err) => { now.textContent = `Cannot play ${t.name}: ${err.message}`; });
      });
      const secs = Math.round((t.duration_ms || 0) / 1000);
      return h("li", {}, h("span", {}, `${t.number}. ${t.name}`), h("span", { class: "muted" }, secs ? `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}` : ""),
        playable ? play : h("span", { class: "muted" }, "missing"));
    }));
    replace(main,
      h("div", { class: "media" }, image(a.image_ids[0], `Cover of ${a.name}`),
        h("div", {}, h("h1", {}, a.name),
          h("p", {}, (a.artists || []).map((ar, i) => [i ? ", " : "", h("a", { href: `#/artist/${api.enc(ar.id)}` }, ar.name)])),
          h("p", { class: "muted" }, [a.album_type, a.release_date, a.label].filter(Boolean).join(" · ")))),
      player, now, tracks);
    return null;
  },
};

export const artist = {
  async render(main, { arg }) {
    const a = await api.get(`/v1/content/artist/${api.enc(arg)}`);
    const list = h("ul", { id: "artist-albums" });
    replace(main, h("div", { class: "media" }, image(a.image_ids[0], `Picture of ${a.name}`),
      h("div", {}, h("h1", {}, a.name), h("p", { class: "muted" }, (a.genres || []).join(", ")))), h("h2", {}, "Albums"), list);
    const albums = await Promise.all((a.album_ids || []).slice(0, 50).map((id) =>
      api.get(`/v1/content/album/${api.enc(id)}`).catch((err) => ({ id, name: id, failed: err.message }))));
    replace(list, albums.length ? albums.map((al) => h("li", {}, h("a", { href: `#/album/${api.enc(al.id)}` }, al.name),
      al.release_date ? ` (${al.release_date.slice(0, 4)})` : "")) : h("li", {}, "No albums in the catalog."));
    return null;
  },
};

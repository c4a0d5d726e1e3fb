// Where a user is told besides the inbox (SPEC §16): their Apprise URLs (masked, as the API
// shows them), the events chosen, save, and a test whose outcome is said per URL.
// The API never gives a saved URL back whole, so a save sends every URL to keep: the form says
// so, and will not save an empty list over saved URLs unless "Remove all URLs" is confirmed.

import * as api from "../api.js";
import { h, replace, statusLine, say, act, field, errorBox } from "../ui.js";

const EVENTS = [["request.completed", "a request of mine completed"], ["request.failed", "a request of mine failed"]];

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

function savedWords(settings) {
  const told = EVENTS.filter(([e]) => settings.events.includes(e)).map(([, words]) => words);
  if (!settings.urls.length) return "Saved. No URL: only this inbox tells you.";
  if (!told.length) return `Saved ${plural(settings.urls.length, "URL")}, but no event is chosen: nothing is sent to them.`;
  return `Saved ${plural(settings.urls.length, "URL")}: told when ${told.join(" or ")}.`;
}

export async function settingsPanel(section) {
  const title = h("h2", { id: "notifications-title" }, "Notifications");
  let current;
  try {
    current = await api.get("/v1/user/notifications");
  } catch (err) {
    replace(section, title, errorBox(err));
    return;
  }
  const line = statusLine({ id: "notify-status" });
  const saved = h("ul", { id: "notify-saved" });
  const results = h("ul", { id: "notify-results" });
  const urls = h("textarea", { id: "notify-urls", name: "urls", rows: 3, autocomplete: "off", spellcheck: "false",
    placeholder: "ntfys://my-secret-topic" });
  const boxes = EVENTS.map(([value, words]) => [value, h("input", { type: "checkbox", name: "events", value }), words]);
  const save = h("button", { type: "submit", class: "primary", id: "notify-save" }, "Save");
  const test = h("button", { type: "button", id: "notify-test" }, "Send a test");
  const clear = h("button", { type: "button", class: "danger", id: "notify-clear" }, "Remove all URLs");
  let armed = false; // "Remove all URLs" was pressed once: the next press removes them

  function show(settings) {
    current = settings;
    replace(saved, settings.urls.length ? settings.urls.map((u) => h("li", {}, h("code", {}, u)))
      : h("li", { class: "muted" }, "None: only this inbox tells you."));
    for (const [value, box] of boxes) box.checked = settings.events.includes(value);
    clear.hidden = !settings.urls.length;
  }

  const form = h("form", { id: "notify-form", "aria-labelledby": "notifications-title" },
    h("fieldset", {}, h("legend", {}, "Tell me when"),
      boxes.map(([, box, words]) => h("label", { class: "check" }, box, words))),
    field("URLs to save, one per line (saving replaces every saved URL)", urls),
    h("div", { class: "row" }, save, test, clear), line, results);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    armed = false;
    const list = urls.value.split("\n").map((u) => u.trim()).filter(Boolean);
    if (!list.length && current.urls.length) {
      say(line, `Not saved: enter every URL to keep, one per line. The ${plural(current.urls.length, "saved URL")} `
        + "cannot be sent back (their secrets are masked). To stop these messages, use \"Remove all URLs\".", "error");
      urls.focus();
      return;
    }
    const body = { urls: list, events: boxes.filter(([, box]) => box.checked).map(([value]) => value) };
    save.disabled = true;
    say(line, "Saving… (each URL is checked first)");
    try {
      show(await api.put("/v1/user/notifications", body));
      urls.value = "";
      replace(results);
      say(line, savedWords(current), "ok");
    } catch (err) {
      say(line, `Not saved: ${err.message}. Nothing changed.`, "error");
    } finally {
      save.disabled = false;
    }
  });

  test.addEventListener("click", async () => {
    armed = false;
    replace(results);
    if (!current.urls.length) { say(line, "Nothing to test: save a URL first.", "error"); return; }
    const res = await act(test, line, () => api.post("/v1/user/notifications/test"), (d) => {
      const arrived = d.results.filter((r) => r.delivered).length;
      return `Test sent: ${arrived} of ${plural(d.results.length, "URL")} took it.`;
    });
    if (res) {
      replace(results, res.results.map((r) => h("li", { class: r.delivered ? "ok" : "error" },
        h("code", {}, r.url), r.delivered ? ": delivered" : `: not delivered — ${r.error}`)));
    }
  });

  clear.addEventListener("click", async () => {
    replace(results);
    if (!armed) {
      armed = true;
      say(line, `This removes ${plural(current.urls.length, "saved URL")}; they cannot be shown again. `
        + "Press \"Remove all URLs\" again to remove them.", "error");
      return;
    }
    armed = false;
    const res = await act(clear, line, () => api.put("/v1/user/notifications", { urls: [], events: current.events }),
      "Removed every URL: only this inbox tells you now.");
    if (res) { show(res); urls.focus(); }
  });

  show(current);
  replace(section, title,
    h("p", { class: "muted" }, "Besides this inbox, the server can tell you elsewhere: give it Apprise URLs, such as ",
      h("code", {}, "ntfys://your-secret-topic"), " (the ntfy app) or ", h("code", {}, "discord://ID/TOKEN"),
      " (a Discord webhook). Only the kinds of URL the server allows are accepted, and none aimed at a private network."),
    h("h3", {}, "Saved URLs (secrets masked)"), saved, form);
}

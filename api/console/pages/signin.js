// Sign in: the login route sets the session cookie every later call (and the event stream) uses.

import * as api from "../api.js";
import { h, replace, statusLine, say } from "../ui.js";

export function render(main, { signedIn }) {
  const handle = h("input", { type: "text", name: "user_handle", id: "user-handle", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", id: "password", autocomplete: "current-password", required: true });
  const line = statusLine({ id: "signin-status" });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "card", id: "signin" },
    h("h1", {}, "Sign in"),
    h("p", {}, h("label", { for: "user-handle" }, "User handle", handle)),
    h("p", {}, h("label", { for: "password" }, "Password", password)),
    button, line);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    say(line, "Signing in…");
    try {
      const data = await api.post("/v1/auth/login", { user_handle: handle.value, password: password.value, device_type: "web", device_name: "console" });
      say(line, "Signed in.", "ok");
      await signedIn(data);
    } catch (err) {
      say(line, `Could not sign in: ${err.message}`, "error");
      button.disabled = false;
      password.focus();
    }
  });
  replace(main, form);
  handle.focus();
  return null;
}

// Users: create one, and change roles and extra permissions (ManagePermissions).

import * as api from "../api.js";
import { h, replace, statusLine, keptLine, redraw, act, field, select, errorBox } from "../ui.js";

const ROLES = ["Admin", "Regular"];
const PERMISSIONS = ["AccessCatalog", "LikeContent", "OwnPlaylists", "EditCatalog", "ManagePermissions",
  "IssueContentDownload", "ServerAdmin", "ViewAnalytics", "RequestContent"];

export async function render(main) {
  const list = h("ul", { class: "cards", id: "users" });
  const handle = h("input", { type: "text", name: "user_handle", required: true, autocomplete: "off" });
  const password = h("input", { type: "password", name: "password", autocomplete: "new-password" });
  const role = select("role", ROLES.map((r) => [r, r]), "Regular");
  const line = statusLine({ id: "create-user-status" });
  const create = h("button", { type: "submit", class: "primary" }, "Create user");
  const form = h("form", { class: "card", id: "create-user" }, h("h2", {}, "New user"),
    h("div", { class: "row" }, field("Handle", handle), field("Password (optional)", password), field("Role", role), create), line);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { user_handle: handle.value.trim(), roles: [role.value] };
    if (password.value) body.password = password.value;
    act(create, line, () => api.post("/v1/admin/users", body), (u) => `Created ${u.user_handle}.`).then((u) => { if (u) { form.reset(); refresh(); } });
  });
  replace(main, h("h1", {}, "Users"), form, list);
  const refresh = () => redraw(list, async () => {
    try {
      const data = await api.get("/v1/admin/users");
      replace(list, data.users.map((u) => card(u, refresh)));
    } catch (err) {
      replace(list, h("li", {}, errorBox(err)));
    }
  });
  await refresh();
  return { refresh, onEvent: () => false };
}

function card(user, refresh) {
  const line = keptLine(`user-${user.user_handle}`);
  const key = (what) => `${what}-${user.user_handle}`;
  const change = (button, call, words) => act(button, line, call, words).then((r) => r && refresh());
  const roles = user.roles.map((r) => {
    const b = h("button", { type: "button", class: "danger", "data-key": key(`role-${r}`), "aria-label": `Remove role ${r} from ${user.user_handle}` }, `Remove ${r}`);
    b.addEventListener("click", () => change(b, () => api.del(`/v1/admin/users/${api.enc(user.user_handle)}/roles/${api.enc(r)}`), `Removed role ${r}.`));
    return b;
  });
  const extras = user.extra_permissions.map((p) => {
    const b = h("button", { type: "button", class: "danger", "data-key": key(`perm-${p}`), "aria-label": `Remove permission ${p} from ${user.user_handle}` }, `Remove ${p}`);
    b.addEventListener("click", () => change(b, () => api.del(`/v1/admin/users/${api.enc(user.user_handle)}/permissions/${api.enc(p)}`), `Removed ${p}.`));
    return b;
  });
  const roleChoice = select("role", ROLES.filter((r) => !user.roles.includes(r)).map((r) => [r, r]));
  const addRole = h("button", { type: "button", "data-key": key("add-role"), disabled: !roleChoice.options.length }, "Add role");
  addRole.addEventListener("click", () => change(addRole, () => api.post(`/v1/admin/users/${api.enc(user.user_handle)}/roles`, { role: roleChoice.value }), `Added role ${roleChoice.value}.`));
  const permChoice = select("permission", PERMISSIONS.filter((p) => !user.permissions.includes(p)).map((p) => [p, p]));
  const addPerm = h("button", { type: "button", "data-key": key("add-perm"), disabled: !permChoice.options.length }, "Grant");
  addPerm.addEventListener("click", () => change(addPerm, () => api.post(`/v1/admin/users/${api.enc(user.user_handle)}/permissions`, { permission: permChoice.value }), `Granted ${permChoice.value}.`));
  return h("li", { class: "card user", "data-handle": user.user_handle },
    h("h3", {}, user.user_handle),
    h("p", { class: "muted" }, `Roles: ${user.roles.join(", ") || "none"}. Permissions: ${user.permissions.join(", ") || "none"}.`),
    h("div", { class: "row" }, roles, extras),
    h("div", { class: "row" }, field("Role", roleChoice), addRole, field("Extra permission", permChoice), addPerm), line);
}

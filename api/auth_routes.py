"""Sessions: login, session, logout (SPEC §4.2).

Login hashes off the event loop (Argon2id) under a limiter; the answer is the same for an unknown
handle and a wrong password, and repeated failures per address and per handle answer 429.
"""

from __future__ import annotations

import secrets

import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from quart import Blueprint, Response, g, jsonify, request

from api.auth import COOKIE, current_user, public, requires
from api.context import ctx
from api.errors import ApiError
from api.schemas import StrictBody, json_body

blueprint = Blueprint("auth", __name__, url_prefix="/v1/auth")
# A hash verified when the handle is unknown, so both failures cost the same time.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$SkPNJIDk+5npvBE8PuXFLQ"
    "$uuWNf4E5q8nnAgPZd/RhHujSk9uf1Xk1MOUQ+o3Z7cY"
)


class LoginBody(StrictBody):
    user_handle: str
    password: str
    device_uuid: str | None = None
    device_type: str | None = None
    device_name: str | None = None


def _verify(hasher: PasswordHasher, pw_hash: str, password: str) -> bool:
    try:
        return hasher.verify(pw_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@blueprint.post("/login")
@public
@json_body(LoginBody)
async def login(data: LoginBody) -> tuple[Response, int]:
    context = ctx()
    keys = (f"addr:{request.remote_addr}", f"user:{data.user_handle}")
    wait = context.throttle.retry_after(*keys)
    if wait is not None:
        raise ApiError(
            429, "too many failed logins; try again later", headers={"Retry-After": str(wait)}
        )
    found = await context.users.db.run(context.users.password_hash, data.user_handle)
    pw_hash = found[1] if found else _DUMMY_HASH
    ok = await trio.to_thread.run_sync(
        _verify, context.hasher, pw_hash, data.password, limiter=context.hash_limiter
    )
    if not ok or found is None:
        context.throttle.failed(*keys)
        raise ApiError(401, "wrong user handle or password", "INVALID_CREDENTIALS")
    user = found[0]
    if context.hasher.check_needs_rehash(pw_hash):
        new_hash = await trio.to_thread.run_sync(
            context.hasher.hash, data.password, limiter=context.hash_limiter
        )
        await context.users.db.run(context.users.rehash_password, user.id, new_hash)
    token = secrets.token_urlsafe(32)
    device = data.model_dump(include={"device_uuid", "device_type", "device_name"})
    await context.users.db.run(context.users.create_session, user.id, token, device)
    response = jsonify(
        {"token": token, "user_handle": user.handle, "permissions": user.permission_names()}
    )
    response.set_cookie(COOKIE, token, httponly=True, samesite="Lax", path="/")
    return response, 201


@blueprint.get("/session")
@requires()
async def session() -> Response:
    user = current_user()
    return jsonify({"user_handle": user.handle, "permissions": user.permission_names()})


@blueprint.route("/logout", methods=["GET", "POST"])
@requires()
async def logout() -> Response:
    context = ctx()
    await context.users.db.run(context.users.delete_session, g.token)
    response = jsonify({"status": "logged_out"})
    response.delete_cookie(COOKIE, path="/")
    return response

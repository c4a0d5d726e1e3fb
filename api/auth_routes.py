"""Sessions: login, session, logout (SPEC §4.2).

Login hashes off the event loop (Argon2id) under a limiter; the answer is the same for an unknown
handle and a wrong password, and repeated failures from one client address, or for one handle
from one client address, answer 429 (`api.throttle`; the address as `api.client` resolves it
behind trusted proxies). The session cookie is `Secure` when the client came over HTTPS.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from quart import Blueprint, Response, g, jsonify
from quart_schema import document_response

from api.auth import COOKIE, current_user, public, requires
from api.client import current_client
from api.context import api_state, root
from api.errors import ApiError
from api.openapi import LoginAnswer, LogoutAnswer, SessionAnswer, answers
from api.schemas import StrictBody, json_body

blueprint = Blueprint("auth", __name__, url_prefix="/v1/auth")


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
@document_response(LoginAnswer, 201)
@answers(201, 401, 429)
@public
@json_body(LoginBody)
async def login(data: LoginBody) -> tuple[Response, int]:
    state = api_state()
    users, hasher, hashing = state.root.users, state.root.hasher, state.root.hashing
    client = current_client()
    wait = state.throttle.retry_after(client.address, data.user_handle)
    if wait is not None:
        raise ApiError(
            429, "too many failed logins; try again later", headers={"Retry-After": str(wait)}
        )
    found = await users.db.run(users.password_hash, data.user_handle)
    pw_hash = found[1] if found else await state.decoy.get()
    ok = await hashing.run(_verify, hasher, pw_hash, data.password)
    if not ok or found is None:
        state.throttle.failed(client.address, data.user_handle)
        raise ApiError(401, "wrong user handle or password", "INVALID_CREDENTIALS")
    user = found[0]
    if hasher.check_needs_rehash(pw_hash):
        new_hash = await hashing.run(hasher.hash, data.password)
        await users.db.run(users.rehash_password, user.id, new_hash)
    token = secrets.token_urlsafe(32)
    device = data.model_dump(include={"device_uuid", "device_type", "device_name"})
    await users.db.run(users.create_session, user.id, token, device)
    response = jsonify(
        {"token": token, "user_handle": user.handle, "permissions": user.permission_names()}
    )
    response.set_cookie(COOKIE, token, httponly=True, samesite="Lax", path="/", secure=client.https)
    return response, 201


@blueprint.get("/session")
@document_response(SessionAnswer, 200)
@requires()
async def session() -> Response:
    user = current_user()
    return jsonify({"user_handle": user.handle, "permissions": user.permission_names()})


@blueprint.route("/logout", methods=["GET", "POST"])
@document_response(LogoutAnswer, 200)
@requires()
async def logout() -> Response:
    users = root().users
    await users.db.run(users.delete_session, g.token)
    response = jsonify({"status": "logged_out"})
    response.delete_cookie(COOKIE, path="/", secure=current_client().https)
    return response

"""The QuartTrio app factory: blueprints, error handlers, metrics, logging, OpenAPI.

`create_app(root)` builds one app per daemon (no module-level app) from the daemon's root; the
app keeps its own login throttle. It refuses to build if any route lacks a permission declaration
(`@requires` or `@public`), so a new route cannot ship open by accident.

quart-schema is set up as its documentation says: it validates request bodies and query strings
(`api.schemas`), serves `/openapi.json`, and converts what a handler returns (a handler that
returns a `Response` made by `jsonify` skips that conversion).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from quart import Response, g, request, send_from_directory
from quart_schema import (
    APIKeySecurityScheme,
    HttpSecurityScheme,
    Info,
    QuartSchema,
    document_response,
    hide,
)
from quart_trio import QuartTrio

from api import (
    admin_users,
    auth_routes,
    content,
    download,
    download_admin,
    download_controls,
    events,
    health,
    jobs,
    listening,
    notifications,
)
from api.auth import COOKIE, PERMISSION_ATTR, public
from api.client import current_client
from api.context import install
from api.converters import CONVERTERS
from api.errors import register_error_handlers
from api.openapi import BEARER, SESSION, SESSION_SECURITY, ApiDocument, OpenApiDocument
from api.text import check_url
from api.throttle import LoginThrottle
from daemon.health import VERSION
from daemon.root import Root

log = logging.getLogger("pezzottify.http")
MAX_BODY = 1024 * 1024
BLUEPRINT_MODULES: list[Any] = [
    auth_routes,
    admin_users,
    content,
    jobs,
    listening,
    download,
    download_admin,
    download_controls,
    events,
    notifications,
    health,
]
DESCRIPTION = (
    "A self-hosted music catalog and its download manager. Sessions come from "
    "`POST /v1/auth/login` (a token, also set as the `session_token` cookie); each operation "
    "names the permissions it requires in `x-required-permission`. Errors are "
    '`{"error": <message>, "code": <MACHINE_CODE>}`.'
)
REDACTED = {"authorization", "cookie", "set-cookie"}
# The methods a metric label may name; any other (a client may send any token) counts as OTHER,
# so that made-up methods cannot add time series without end.
METHOD_LABELS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SECRET_BODIES = ("/v1/auth", "/v1/admin/users")
LOGGED_BODY = 2048
# The web console (SPEC §17): static files shipped in the package, served at `/` unless
# `frontend_dir_path` names another folder. It loads nothing from elsewhere; the policy says so
# to the browser too, so an injected script or a foreign asset is refused.
CONSOLE_DIR = Path(__file__).parent / "console"
# A reader of the OpenAPI document at `/docs` (SPEC §11): a page and its script and style,
# shipped in the package, that load nothing from elsewhere.
DOCS_DIR = Path(__file__).parent / "docs"
# The endpoints of those files: public, not the API (no OpenAPI entry, no JSON bodies).
STATIC_ENDPOINTS = frozenset({"frontend_index", "frontend_file", "docs_index", "docs_file"})
CONSOLE_POLICY = (
    "default-src 'self'; img-src 'self' data: https: http:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def create_app(root: Root, *, throttle: LoginThrottle | None = None) -> QuartTrio:
    app = QuartTrio("pezzottify", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    # No redirects for '//' or a trailing '/': an odd path is answered, never bounced.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.url_map.converters.update(CONVERTERS)
    install(app, root, LoginThrottle() if throttle is None else throttle)
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        convert_casing=False,  # field names are the SPEC's, snake_case both ways
        info=Info(title="pezzottify", version=VERSION, description=DESCRIPTION),
        security_schemes={
            BEARER: HttpSecurityScheme(scheme="bearer"),
            SESSION: APIKeySecurityScheme(name=COOKIE, in_="cookie"),
        },
        security=SESSION_SECURITY,
        openapi_provider_class=ApiDocument,
    )
    register_error_handlers(app)
    for module in BLUEPRINT_MODULES:
        app.register_blueprint(module.blueprint)
    _serve_docs(app)
    _serve_frontend(app, root.config.frontend_dir_path or CONSOLE_DIR)
    _observe_requests(app, root)
    _check_public_urls(app)
    # quart-schema's view is a bound method; wrap it to carry the declarations.
    openapi_view = app.view_functions["openapi"]

    @public
    @document_response(OpenApiDocument)
    async def openapi_document() -> Any:
        return await app.ensure_async(openapi_view)()

    app.view_functions["openapi"] = openapi_document
    check_route_permissions(app)
    app.asgi_app = events.StreamScopes(app.asgi_app, root.hub)  # type: ignore[method-assign]
    return app


def check_route_permissions(app: QuartTrio) -> None:
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if not hasattr(view, PERMISSION_ATTR):
            raise RuntimeError(f"route {rule.rule} declares no permission (@requires or @public)")


def _check_public_urls(app: QuartTrio) -> None:
    """Bad text in the path or query of a public route, or of a path that matches no route, is
    refused here; `requires` checks a session route's after its permission check."""

    @app.before_request
    async def refuse_bad_text() -> None:
        rule = request.url_rule
        view = app.view_functions.get(rule.endpoint) if rule is not None else None
        if getattr(view, PERMISSION_ATTR, None) is None:
            check_url()


def _serve_docs(app: QuartTrio) -> None:
    """`/docs`: the API's documentation, read from `/openapi.json` by a script of the package."""

    def shipped(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CONSOLE_POLICY
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/docs")
    @public
    @hide
    async def docs_index() -> Response:
        return shipped(await send_from_directory(DOCS_DIR, "index.html"))

    @app.get("/docs/<name>")
    @public
    @hide
    async def docs_file(name: str) -> Response:
        return shipped(await send_from_directory(DOCS_DIR, name))


def _serve_frontend(app: QuartTrio, folder: Path) -> None:
    """Static files at `/` (the console, or the configured folder). They are not the API: not
    in the OpenAPI document, and `/v1/...` never falls through to them (a JSON 404)."""

    def console(response: Response) -> Response:
        if folder == CONSOLE_DIR:
            response.headers["Content-Security-Policy"] = CONSOLE_POLICY
            response.headers["Cache-Control"] = "no-cache"  # an upgrade shows at once
        return response

    @app.get("/")
    @public
    @hide
    async def frontend_index() -> Response:
        return console(await send_from_directory(folder, "index.html"))

    # Not under /v1/: there an unknown path is the API's 404, and a 405 lists only the API's
    # methods (this GET would otherwise be allowed on every path).
    @app.get('/<other_than("v1"):path>')
    @public
    @hide
    async def frontend_file(path: str) -> Response:
        return console(await send_from_directory(folder, path))


def _observe_requests(app: QuartTrio, root: Root) -> None:
    level = root.config.logging_level
    metrics = root.metrics

    @app.before_request
    async def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    async def record(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        method = request.method if request.method in METHOD_LABELS else "OTHER"
        metrics.http_requests.labels(method, route, str(response.status_code)).inc()
        metrics.http_duration.labels(route).observe(elapsed)
        if level != "none":
            await _log_request(level, response, elapsed)
        return response


async def _log_request(level: str, response: Response, elapsed: float) -> None:
    """One line per request, naming the client as resolved behind trusted proxies; headers
    (credentials redacted) and bodies at the higher levels. Bodies of routes that carry passwords
    are never logged."""
    log.info(
        "%s %s -> %d (%.1f ms) from %s",
        request.method,
        request.path,
        response.status_code,
        elapsed * 1000,
        current_client().address,
    )
    if level in ("headers", "body"):
        headers = {
            k: ("<redacted>" if k.lower() in REDACTED else v) for k, v in request.headers.items()
        }
        log.info("  request headers: %s", headers)
    if level == "body" and not request.path.startswith(SECRET_BODIES):
        body = await request.get_data(cache=True, as_text=False)
        if isinstance(body, bytes) and body:
            log.info("  request body: %s", body[:LOGGED_BODY].decode("utf-8", "replace"))

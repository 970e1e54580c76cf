"""What every service's FastAPI app has: health, readiness, metrics, JSON errors, limits, security headers.

Browser protections live here so every app has them: a strict CSP (no inline script or style,
nothing from another origin), HSTS in production, ``no-store`` on anything answered to a request
with credentials, and a refusal of cross-site unsafe requests (Sec-Fetch-Site / Origin). The
client address the rate limits count is the proxy's client only when the proxy is trusted
(``FORWARDED_ALLOW_IPS``, as uvicorn reads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import anyio.to_thread
import redis
import redis.asyncio
import structlog
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from shared import errors
from shared.db import ping
from shared.logs import configure_logging
from shared.redis_client import async_redis_client, redis_client
from shared.settings import ServiceSettings

log = structlog.get_logger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Every script and style comes from a file of this origin: an injected tag or attribute never runs.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
}
HSTS = "max-age=31536000; includeSubDomains"
# Swagger UI (development and test only: production has no /docs) loads its files from a CDN and starts
# with an inline script; this policy is sent on the docs pages alone, never on a page with personal data.
DOCS_CSP = ("default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; style-src 'self' https://cdn.jsdelivr.net; "
            "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; frame-ancestors 'none'")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_cross_site(request: Request, *, own_origins: set[str]) -> bool:
    """Whether a browser sent this request from another site or origin.

    Browsers say so in Sec-Fetch-Site (a page cannot forge it); older ones send Origin. A request
    with neither (a server, a script with a bearer token) is not cross-site here: the form token
    guards cookie-signed forms from those browsers.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return _origin(origin) not in own_origins | {_origin(f"{request.url.scheme}://{request.url.netloc}")}


def _origin(url: str) -> str:
    """scheme://host[:port] with default ports dropped, or "null" for anything else."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "null"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "null"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port and port != default else "")


def _wants_page(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")) or \
        "text/html" in request.headers.get("accept", "")


# The count of a rate limit's window (and, when given, the value of another key) in one command:
# one round trip, one reply to parse. The window's key expires after two windows.
COUNT_AND_READ = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if KEYS[2] then return {count, redis.call('GET', KEYS[2])} end
return {count}
"""


class RateLimited:
    """A per-client limit on requests a minute, counted in Redis so every API process shares it.

    Used on what anyone can call without an account (meeting search, the feed) and on the
    provider callbacks. If Redis is unreachable the request is let through: search must not
    fail because the limiter cannot count. The count is one round trip on the event loop
    (redis.asyncio), not a worker thread's; an endpoint that must read Redis before its
    parameters (the directory's kept answers) reads its key in the same round trip (``count``)
    and the dependency then counts nothing more.
    """

    COUNTED = "fama.rate_limit_counted"  # scope key: this request was counted already

    def __init__(self, name: str, setting: str):
        self.name, self.setting = name, setting

    async def __call__(self, request: Request) -> None:
        if not request.scope.get(self.COUNTED):
            await self.count(request)

    async def count(self, request: Request, *, also_read: str | None = None) -> tuple[bool, bytes | None]:
        """Count the request, refusing it (429) over the limit, and read ``also_read`` in the same
        round trip: (whether Redis answered, that key's value)."""
        request.scope[self.COUNTED] = True
        settings: ServiceSettings = request.app.state.settings
        limit = getattr(settings, self.setting)
        client = async_redis(request.app)
        try:
            if limit <= 0:
                return True, await client.get(also_read) if also_read else None
            window = int(time.time() // 60)
            client_ip = request.client.host if request.client else "unknown"
            key = f"{settings.redis_key_prefix}ratelimit:{self.name}:{client_ip}:{window}"
            count_and_read = client.register_script(COUNT_AND_READ)  # EVALSHA, the script sent once
            found = await count_and_read(keys=[key, also_read] if also_read else [key], args=[120])
        except redis.RedisError as exc:
            log.warning("ratelimit.unavailable", limit=self.name, error=type(exc).__name__)
            return False, None
        if found[0] > limit:
            retry_after = 60 - int(time.time()) % 60
            raise HTTPException(429, detail=f"too many requests: at most {limit} a minute, try again in {retry_after} s",
                                headers={"Retry-After": str(retry_after)})
        return True, found[1] if also_read else None


def async_redis(app: FastAPI) -> redis.asyncio.Redis:
    """The app's asyncio Redis client, made in (and kept for) the running event loop."""
    loop = asyncio.get_running_loop()
    held = getattr(app.state, "redis", None)
    if held is None or held[0] is not loop:
        held = app.state.redis = (loop, async_redis_client(app.state.settings, timeout=1))
    return held[1]


PUBLIC_LIMIT = RateLimited("public", "public_rate_limit_per_minute")
PublicRateLimit = Depends(PUBLIC_LIMIT)
CallbackRateLimit = Depends(RateLimited("callback", "callback_rate_limit_per_minute"))


class BodyLimit:
    """Refuse request bodies over the limit even when no Content-Length announces them
    (chunked uploads): the body is counted as it arrives and the request stopped at 413."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, detail=f"request body larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)


class Observe:
    """Counts and times every request, adds the security headers, refuses oversized and cross-site
    requests. Pure ASGI: it only rewrites the response's start message, so it costs no task, no
    stream and no thread per request (a ``@app.middleware("http")`` function costs all three and
    was a third of a simple request's time under load: docs/PERFORMANCE.md)."""

    def __init__(self, app, *, fama_app: FastAPI, requests: Counter, latency: Histogram, production: bool,
                 own_origins: set[str], docs_paths: set[str]):
        self.app, self.fama_app, self.requests, self.latency = app, fama_app, requests, latency
        self.production, self.own_origins, self.docs_paths = production, own_origins, docs_paths
        self.max_bytes = fama_app.state.settings.max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        state = self.fama_app.state
        headers = Headers(scope=scope)
        method, path = scope["method"], scope["path"]
        status = 500
        extra = self._headers_for(headers, path, state)

        async def send_with_headers(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = MutableHeaders(scope=message)
                for k, v in extra[0].items():
                    response_headers.setdefault(k, v)
                for k, v in extra[1].items():
                    response_headers[k] = v
            await send(message)

        try:
            length = headers.get("content-length")
            if length and length.isdigit() and int(length) > self.max_bytes:
                response = JSONResponse({"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413)
                return await response(scope, receive, send_with_headers)
            if method in UNSAFE_METHODS:
                request = Request(scope, receive)
                if is_cross_site(request, own_origins=self.own_origins):
                    log.warning("request.cross_site_refused", method=method)
                    if state.refused_form_page is not None and _wants_page(request):
                        response = state.refused_form_page(request)
                    else:
                        response = JSONResponse({"detail": "cross-site request refused: send it from this service's "
                                                           "own pages or without a browser"}, status_code=403)
                    return await response(scope, receive, send_with_headers)
            await self.app(scope, receive, send_with_headers)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(method, route, str(status)).inc()
            self.latency.labels(method, route).observe(time.perf_counter() - start)

    def _headers_for(self, headers: Headers, path: str, state) -> tuple[dict, dict]:
        """(headers set unless the response has its own, headers always set)."""
        defaults = {**SECURITY_HEADERS, "Content-Security-Policy": DOCS_CSP} if path in self.docs_paths \
            else SECURITY_HEADERS
        if self.production:
            defaults = {**defaults, "Strict-Transport-Security": HSTS}
        credentials = "authorization" in headers or path.startswith(state.private_paths)
        if not credentials and state.credential_cookies and "cookie" in headers:
            credentials = bool(state.credential_cookies & cookie_parser(headers["cookie"]).keys())
        # What is answered to someone signed in may carry personal data (a client's mobile).
        return defaults, {"Cache-Control": "no-store"} if credentials else {}


async def reject_unknown_query_parameters(request: Request) -> None:
    """An API call with a query parameter the endpoint does not take is refused (422), so a
    misspelt filter (``?fellowhsip=aa``) is reported instead of silently ignored. Pages
    (outside the OpenAPI document) are lenient: browsers add their own parameters.
    ``async`` because it does no I/O: a plain ``def`` would cost a worker thread on every request."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.include_in_schema:
        return
    known, dependants = set(), [route.dependant]
    while dependants:
        dependant = dependants.pop()
        known |= {param.alias for param in dependant.query_params}
        dependants.extend(dependant.dependencies)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError([{"loc": ("query", name), "msg": "unknown query parameter", "type": "unknown"}
                                      for name in unknown])


def make_app(*, service: str, settings: ServiceSettings, engine: Callable[[], Engine], title: str,
             description: str = "", **fastapi_kw) -> FastAPI:
    """A service's app: the app and its state, the middleware, the error answers, the ops routes."""
    configure_logging(settings.log_level)
    app = _new_app(service=service, settings=settings, title=title, description=description, **fastapi_kw)
    _add_middleware(app)
    _add_error_handlers(app)
    _add_ops_routes(app, engine=engine)
    return app


@contextlib.asynccontextmanager
async def _frozen_at_start(app: FastAPI):
    """Before the first request: the app's ``warm_up`` calls (``app.state.warm_up``: what the first
    requests would otherwise pay for, made in a thread), then what the process loaded to start
    (~160,000 objects: the app, its models, SQLAlchemy's and pydantic's) is left out of the garbage
    collector's scans: a full scan of it took ~90 ms, every few thousand requests, and was the slowest
    1% of a busy API's answers (docs/PERFORMANCE.md §9)."""
    for warm_up in app.state.warm_up:
        try:
            await anyio.to_thread.run_sync(warm_up)
        except Exception as exc:  # noqa: BLE001 (the database may be down: start anyway, /healthz says so)
            log.warning("app.warm_up_failed", warm_up=warm_up.__name__, error=type(exc).__name__)
    gc.collect()
    gc.freeze()
    yield


def _new_app(*, service: str, settings: ServiceSettings, title: str, description: str, **fastapi_kw) -> FastAPI:
    """The FastAPI app with the state the middleware and pages read."""
    # No API explorer on the desk's origin in production: it would load third-party script.
    if settings.environment == "production":
        fastapi_kw = {"docs_url": None, "redoc_url": None, "openapi_url": None, **fastapi_kw}
    app = FastAPI(title=title, description=description, version="0.1.0", lifespan=_frozen_at_start,
                  dependencies=[Depends(reject_unknown_query_parameters)], **fastapi_kw)
    app.state.settings = settings
    app.state.service = service
    app.state.warm_up = []
    # Paths whose responses are never stored by a browser or proxy, even without credentials (pages add theirs).
    app.state.private_paths = ()
    # Cookies that sign a browser in (pages add theirs): a request carrying one is answered no-store.
    app.state.credential_cookies = set()
    # Set by shared.pages: the page a refused form gets instead of JSON.
    app.state.refused_form_page = None
    return app


def _add_middleware(app: FastAPI) -> None:
    """Body limit, trusted proxy headers, and the request metrics and browser protections (Observe)."""
    settings: ServiceSettings = app.state.settings
    production = settings.environment == "production"
    public_url = getattr(settings, f"{app.state.service}_public_url", None)
    own_origins = {_origin(public_url)} if public_url else set()
    docs_paths = {p for p in (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if p}
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    # The client address behind a trusted proxy (for the rate limits); anyone else's X-Forwarded-For is ignored.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    registry = CollectorRegistry()
    requests = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=registry)
    app.state.metrics_registry = registry

    app.add_middleware(Observe, fama_app=app, requests=requests, latency=latency, production=production,
                       own_origins=own_origins, docs_paths=docs_paths)


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal answered as JSON with a sentence (and per-field errors), and documented so."""

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")),
             "message": str(e.get("msg", "")).removeprefix("Value error, "), "type": e.get("type")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in errors)
        return JSONResponse({"detail": summary, "errors": errors}, status_code=422)

    @app.exception_handler(IntegrityError)
    async def integrity_error(_request: Request, exc: IntegrityError):
        log.warning("db.integrity_error", error=type(exc.orig).__name__)
        return JSONResponse({"detail": "this conflicts with something already stored"}, status_code=409)

    @app.exception_handler(OperationalError)
    async def operational_error(_request: Request, exc: OperationalError):
        log.error("db.unavailable", error=type(exc.orig).__name__)
        return JSONResponse({"detail": "the database is unavailable, try again shortly"}, status_code=503)

    errors.register(app)  # every refusal of the domain (shared/errors.py)
    _document_errors(app)
    _allow_all_methods_of_a_path(app)


def _add_ops_routes(app: FastAPI, *, engine: Callable[[], Engine]) -> None:
    """/healthz, /readyz (the database and Redis answer) and /metrics."""
    service, settings, registry = app.state.service, app.state.settings, app.state.metrics_registry

    @app.get("/healthz", tags=["ops"], summary="The process is up")
    def healthz() -> dict:
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["ops"], summary="The database and Redis answer")
    def readyz():
        checks = {}
        try:
            ping(engine())
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        try:
            client = redis_client(settings, timeout=2)
            client.ping()
            client.close()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unavailable: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics():
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


# What every 4xx answers with: a sentence for people, and per-field errors for programs.
ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"title": "Detail", "description": "What was wrong, in one sentence"},
        "errors": {
            "title": "Errors",
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


ERROR_RESPONSES = {
    "400": "The request could not be read",
    "401": "No token, or a token that is invalid or expired",
    "403": "The token's role or site does not allow this",
    "404": "Nothing with that identifier",
    "405": "The path does not take that method",
    "409": "It conflicts with what is stored (or the move is not allowed now)",
    "413": "The request body is too large",
    "422": "The input is not valid: see detail and errors",
    "429": "Too many requests: wait and try again",
    "503": "The database or Redis is unavailable: try again shortly",
}


def _document_errors(app: FastAPI) -> None:
    """Make the OpenAPI document describe the error responses this app really sends."""
    original = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["HTTPValidationError"] = ERROR_SCHEMA
        components.pop("ValidationError", None)
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for code, description in ERROR_RESPONSES.items():
                    responses.setdefault(code, {"description": description, **error})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _allow_all_methods_of_a_path(app: FastAPI) -> None:
    """A 405 names every method the path takes (Starlette names only one route's)."""
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.routing import Match

    default = app.exception_handlers.get(StarletteHTTPException)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 405:
            allowed = set()
            for route in app.router.routes:
                methods = getattr(route, "methods", None)
                if methods and route.matches({**request.scope, "method": next(iter(methods))})[0] == Match.FULL:
                    allowed |= methods
            return JSONResponse({"detail": "this path does not take that method"}, status_code=405,
                                headers={"Allow": ", ".join(sorted(allowed))})
        if default is not None:
            return await default(request, exc)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

"""Server-rendered pages: one look for all services, and sign-in with a token in a cookie.

Each service renders its own pages from its own templates folder; ``base.html``, the login
page and the stylesheet live here so the three services look the same. Links between
services are plain URLs from settings: a page never calls another service.

Forms are protected from cross-site request forgery twice: shared.web refuses unsafe requests
a browser marks as cross-site (Sec-Fetch-Site, Origin), and every form signed by the cookie
(and sign-in and sign-out, always) carries a token: an HMAC of a random value kept in its own
cookie (signed double submit), which another site can neither read nor make.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import jwt
import structlog
from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, FileSystemLoader, pass_context
from markupsafe import Markup
from starlette.middleware.sessions import SessionMiddleware

from shared import sso
from shared.auth import NoFamaRole, Principal, Role, decode_token
from shared.settings import ServiceSettings

log = structlog.get_logger(__name__)
HERE = Path(__file__).parent
COOKIE = "fama_token"
LOGIN_PATH = "/signin"
LOGOUT_PATH = LOGIN_PATH + "/out"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class NeedsLogin(Exception):
    def __init__(self, next_url: str):
        self.next_url = next_url


class PageForbidden(Exception):
    def __init__(self, message: str):
        self.message = message


class FormRefused(Exception):
    """A form without a valid token, or sent from another site."""


# --- form tokens ---------------------------------------------------------------------------

def csrf_cookie_name(settings: ServiceSettings) -> str:
    """In production the __Host- prefix: only this exact origin over HTTPS can set it (no sibling subdomain)."""
    return "__Host-fama_csrf" if settings.environment == "production" else "fama_csrf"


def _csrf_key(settings: ServiceSettings) -> bytes:
    # Without CSRF_SECRET: the service's own secrets (production refuses development encryption keys).
    secret = settings.csrf_secret or f"{settings.jwt_secret}|{settings.encryption_keys}"
    return hashlib.sha256(b"fama-form-token:" + secret.encode()).digest()


def _token_for(settings: ServiceSettings, nonce: str) -> str:
    return hmac.new(_csrf_key(settings), nonce.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    """The token for this browser's forms; a browser without the cookie gets one with the response."""
    settings = request.app.state.settings
    nonce = request.cookies.get(csrf_cookie_name(settings), "")
    if not 20 <= len(nonce) <= 100:
        nonce = getattr(request.state, "csrf_nonce", None) or secrets.token_urlsafe(32)
        request.state.csrf_nonce = nonce
    return _token_for(settings, nonce)


@pass_context
def csrf_field(context) -> Markup:
    """``{{ csrf_field() }}`` inside every POST form."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, csrf_token(context["request"]))


async def check_form_token(request: Request, *, always: bool = False) -> None:
    """Refuse an unsafe request signed by the cookie (or any, if ``always``) without this browser's token.

    A request signed only by a bearer header needs none: another site cannot make a browser send one.
    """
    signed_in_by_cookie = bool(request.app.state.credential_cookies & request.cookies.keys())
    if request.method not in UNSAFE_METHODS or not (always or signed_in_by_cookie):
        return
    settings = request.app.state.settings
    nonce = request.cookies.get(csrf_cookie_name(settings), "")
    sent = (await request.form()).get(CSRF_FIELD)
    if not nonce or not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), _token_for(settings, nonce).encode()):
        raise FormRefused()


async def csrf_protected(request: Request) -> None:
    """A router dependency for pages whose forms change something."""
    await check_form_token(request)


async def _csrf_always(request: Request) -> None:
    await check_form_token(request, always=True)


def render(templates: Jinja2Templates, request: Request, name: str, context: dict,
           status_code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


# --- words and times (GOV.UK style) ------------------------------------------------------

DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def clock(value: dt.time | dt.datetime) -> str:
    """14:00 -> 2:00pm; 12:00 -> 12:00pm (midday)."""
    hour = value.hour % 12 or 12
    return f"{hour}:{value.minute:02d}{'am' if value.hour < 12 else 'pm'}"


def parse_date(value: str) -> dt.date | None:
    """2026-11-16 (what a date field sends) or 16/11/2026 (typed); None when empty, ValueError when not a date."""
    value = value.strip()
    if not value:
        return None
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%d %m %Y"):
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(value)


def make_templates(service_templates: Path) -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(service_templates))
    templates.env.loader = ChoiceLoader([FileSystemLoader(str(service_templates)), FileSystemLoader(str(HERE / "templates"))])
    templates.env.globals["csrf_field"] = csrf_field
    return templates


def page_links(settings: ServiceSettings) -> dict[str, str]:
    return {
        "find": f"{settings.directory_public_url}/",
        "desk": f"{settings.referrals_public_url}/desk",
        "dashboard": f"{settings.directory_public_url}/dashboard",
        "admin": f"{settings.directory_public_url}/admin",
    }


def page_principal(request: Request) -> Principal | None:
    """The signed-in user from the single sign-on session, the token cookie or a bearer header, or None."""
    principal = sso.session_principal(request)
    if principal is not None:
        return principal
    token = request.cookies.get(COOKIE)
    header = request.headers.get("authorization", "")
    if not token and header.lower().startswith("bearer "):
        token = header[7:]
    if not token:
        return None
    try:
        return decode_token(request.app.state.settings, token)
    except (jwt.PyJWTError, ValueError):
        return None


OptionalPagePrincipal = Annotated[Principal | None, Depends(page_principal)]


def require_page_roles(*roles: Role):
    """A page dependency: sends a visitor to sign in, and refuses the wrong role with 403."""

    def dependency(request: Request, principal: OptionalPagePrincipal) -> Principal:
        if principal is None:
            raise NeedsLogin(str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""))
        if principal.role not in roles:
            allowed = ", ".join(r.value.replace("_", " ") for r in roles)
            raise PageForbidden(f"This page is for: {allowed}.")
        return principal

    return dependency


class FormCookie:
    """Sets the form token's cookie on the answer to a request whose page made one
    (``request.state.csrf_nonce``). Pure ASGI: it only adds a header to the response's start, so it
    costs no task or stream per request as an ``@app.middleware("http")`` function does."""

    def __init__(self, app, *, name: str, secure: bool):
        self.app, self.name, self.secure = app, name, secure

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                nonce = scope.get("state", {}).get("csrf_nonce")
                if nonce:
                    cookie = Response()
                    cookie.set_cookie(self.name, nonce, httponly=True, samesite="strict", path="/", secure=self.secure)
                    message["headers"] = [*message.get("headers", []),
                                           *((k, v) for k, v in cookie.raw_headers if k == b"set-cookie")]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def setup_pages(app: FastAPI, templates: Jinja2Templates) -> None:
    """Static files, sign-in/out routes, form tokens and the page error handlers for one service."""
    settings: ServiceSettings = app.state.settings
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    templates.env.globals.update(links=page_links(settings), static_url="/static/fama.css", login_path=LOGIN_PATH,
                                 logout_path=LOGOUT_PATH)
    app.state.private_paths = (*app.state.private_paths, LOGIN_PATH)
    app.state.credential_cookies.add(COOKIE)
    router = APIRouter(include_in_schema=False)

    def refused_page(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "message.html", {
            "title": "This form could not be sent",
            "message": "It was not sent from this page, or the page was open too long. Nothing has changed. "
                       "Go back, reload the page and try again.",
            "principal": page_principal(request)}, status_code=403)

    app.state.refused_form_page = refused_page

    app.add_middleware(FormCookie, name=csrf_cookie_name(settings), secure=settings.environment == "production")

    sign_on = sso.enabled(settings)
    templates.env.globals.update(sign_on=sign_on, provider_name=settings.oidc_provider_name)
    if sign_on:
        _setup_sign_on(app, settings)

    def login_page(request: Request, next_url: str, *, error: str | None = None, notice: str | None = None,
                   status_code: int = 200) -> HTMLResponse:
        return templates.TemplateResponse(request, "login.html", {
            "title": "Sign in", "next": _safe_next(next_url), "principal": None, "error": error, "notice": notice,
            "start_path": sso.START_PATH}, status_code=status_code)

    @router.get(LOGIN_PATH, response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/"):
        notice = None
        if sso.session_expired(request):
            request.session.pop(sso.SESSION_KEY, None)
            notice = f"Your session has ended (a session lasts {settings.session_hours:g} hours). Sign in again."
        return login_page(request, next, notice=notice)

    @router.post(LOGIN_PATH, response_class=HTMLResponse, dependencies=[Depends(_csrf_always)])
    def login(request: Request, token: Annotated[str, Form(max_length=5000)] = "",
              next: Annotated[str, Form(max_length=500)] = "/"):
        if sign_on:
            return login_page(request, next, status_code=400,
                              error=f"This service signs you in through {settings.oidc_provider_name}, not with a "
                                    "pasted token: use the sign-in button.")
        token = token.strip()
        try:
            decode_token(settings, token)
        except (jwt.PyJWTError, ValueError):
            return login_page(request, next, status_code=401,
                              error="That token was not accepted. Check it is complete and has not expired.")
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=settings.environment == "production",
                            max_age=12 * 3600)
        return response

    @router.get(sso.START_PATH)
    async def sign_on_start(request: Request, next: str = "/"):
        if not sign_on:
            return RedirectResponse(LOGIN_PATH, status_code=303)
        try:
            return await sso.start(request, _safe_next(next))
        except Exception as exc:  # the provider's discovery document cannot be read: say so, change nothing
            log.warning("sso.provider_unreachable", reason=type(exc).__name__)
            return login_page(request, next, status_code=503,
                              error=f"{settings.oidc_provider_name} cannot be reached at the moment. Nothing has "
                                    "changed: try again in a few minutes.")

    @router.get(sso.CALLBACK_PATH, response_class=HTMLResponse)
    async def sign_on_callback(request: Request):
        if not sign_on:
            return RedirectResponse(LOGIN_PATH, status_code=303)
        try:
            _principal, next_url = await sso.finish(request)
        except sso.SignInFailed as exc:
            return login_page(request, "/", status_code=400, error=f"{exc} Nothing has changed: sign in again.")
        except NoFamaRole as exc:
            return templates.TemplateResponse(request, "message.html", {
                "title": "You cannot use FAMA yet", "principal": None,
                "message": f"You signed in at {settings.oidc_provider_name}, but {exc}. Ask your FAMA administrator "
                           "to give your account a FAMA role (and site). Nothing has changed."}, status_code=403)
        response = RedirectResponse(_safe_next(next_url), status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @router.get(sso.SIGNED_OUT_PATH, response_class=HTMLResponse)
    def signed_out(request: Request):
        return templates.TemplateResponse(request, "message.html", {
            "title": "You are signed out", "principal": None,
            "message": f"You are signed out of FAMA and of {settings.oidc_provider_name}.",
            "link": {"href": LOGIN_PATH, "text": "Sign in again"}})

    @router.get(LOGOUT_PATH, response_class=HTMLResponse)
    def logout_form(request: Request):
        """An old sign-out link: a GET changes nothing, it offers the button."""
        principal = page_principal(request)
        if principal is None:
            return RedirectResponse(LOGIN_PATH, status_code=303)
        return templates.TemplateResponse(request, "signout.html", {"title": "Sign out", "principal": principal})

    @router.post(LOGOUT_PATH, dependencies=[Depends(_csrf_always)])
    async def logout(request: Request):
        target = LOGIN_PATH
        if sign_on:
            signed_on = request.session.pop(sso.SESSION_KEY, None)
            request.session.clear()
            if signed_on:  # and at the provider too, or the next sign-in would be silent
                target = await sso.end_session_url(request) or LOGIN_PATH
        response = RedirectResponse(target, status_code=303)
        response.delete_cookie(COOKIE)
        return response

    app.include_router(router)

    @app.exception_handler(NeedsLogin)
    async def needs_login(_request: Request, exc: NeedsLogin):
        return RedirectResponse(f"{LOGIN_PATH}?next={quote(exc.next_url)}", status_code=303)

    @app.exception_handler(PageForbidden)
    async def forbidden(request: Request, exc: PageForbidden):
        return templates.TemplateResponse(request, "message.html",
                                          {"title": "You cannot see this page", "message": exc.message,
                                           "principal": page_principal(request)}, status_code=403)

    @app.exception_handler(FormRefused)
    async def form_refused(request: Request, _exc: FormRefused):
        return refused_page(request)


def _setup_sign_on(app: FastAPI, settings: ServiceSettings) -> None:
    """The session cookie, and a CSP letting the sign-out form continue to the provider's sign-out page."""
    cookie = sso.session_cookie_name(settings, app.state.service)
    app.state.credential_cookies.add(cookie)
    form_action = f"form-action 'self' {sso.provider_origin(settings)}"

    @app.middleware("http")
    async def provider_sign_out_allowed(request: Request, call_next):
        response = await call_next(request)
        policy = response.headers.get("content-security-policy")
        if policy:
            response.headers["content-security-policy"] = policy.replace("form-action 'self'", form_action)
        return response

    # Max age beyond the session's own end, so an ended session is recognised and its holder told.
    app.add_middleware(SessionMiddleware, secret_key=sso.session_key(settings), session_cookie=cookie,
                       max_age=int(settings.session_hours * 3600) + 12 * 3600, same_site="lax",
                       https_only=settings.environment == "production")


def _safe_next(value: str) -> str:
    """Only same-site paths: never redirect a signed-in user to another site."""
    return value if value.startswith("/") and not value.startswith("//") else "/"

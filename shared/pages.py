"""Server-rendered pages: one look for all services, and sign-in with a token in a cookie.

Each service renders its own pages from its own templates folder; ``base.html``, the login
page and the stylesheet live here so the three services look the same. Links between
services are plain URLs from settings: a page never calls another service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import jwt
from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, FileSystemLoader

from shared.auth import Principal, Role, decode_token
from shared.settings import ServiceSettings

HERE = Path(__file__).parent
COOKIE = "fama_token"
LOGIN_PATH = "/signin"


class NeedsLogin(Exception):
    def __init__(self, next_url: str):
        self.next_url = next_url


class PageForbidden(Exception):
    def __init__(self, message: str):
        self.message = message


def make_templates(service_templates: Path) -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(service_templates))
    templates.env.loader = ChoiceLoader([FileSystemLoader(str(service_templates)), FileSystemLoader(str(HERE / "templates"))])
    return templates


def page_links(settings: ServiceSettings) -> dict[str, str]:
    return {
        "find": f"{settings.directory_public_url}/",
        "desk": f"{settings.referrals_public_url}/desk",
        "dashboard": f"{settings.directory_public_url}/dashboard",
    }


def page_principal(request: Request) -> Principal | None:
    """The signed-in user from the cookie (or a bearer header), or None."""
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


def setup_pages(app: FastAPI, templates: Jinja2Templates) -> None:
    """Static files, sign-in/out routes and the page error handlers for one service."""
    settings: ServiceSettings = app.state.settings
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    templates.env.globals.update(links=page_links(settings), static_url="/static/fama.css", login_path=LOGIN_PATH)
    router = APIRouter(include_in_schema=False)

    @router.get(LOGIN_PATH, response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/"):
        return templates.TemplateResponse(request, "login.html", {"title": "Sign in", "next": _safe_next(next),
                                                                  "principal": None, "error": None})

    @router.post(LOGIN_PATH, response_class=HTMLResponse)
    def login(request: Request, token: Annotated[str, Form(max_length=5000)] = "",
              next: Annotated[str, Form(max_length=500)] = "/"):
        token = token.strip()
        try:
            decode_token(settings, token)
        except (jwt.PyJWTError, ValueError):
            return templates.TemplateResponse(
                request, "login.html",
                {"title": "Sign in", "next": _safe_next(next), "principal": None,
                 "error": "That token was not accepted. Check it is complete and has not expired."},
                status_code=401)
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=settings.environment == "production",
                            max_age=12 * 3600)
        return response

    @router.get(LOGIN_PATH + "/out")
    def logout():
        response = RedirectResponse(LOGIN_PATH, status_code=303)
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


def _safe_next(value: str) -> str:
    """Only same-site paths: never redirect a signed-in user to another site."""
    return value if value.startswith("/") and not value.startswith("//") else "/"

"""Single sign-on for the pages: OpenID Connect, authorization code with PKCE, through Authlib.

Set OIDC_ISSUER and OIDC_CLIENT_ID (and OIDC_CLIENT_SECRET for a confidential client) and the
pages sign staff in at the organisation's identity provider; nothing here knows which provider.
The ID token's claims give the FAMA role, site and region through the OIDC_*_CLAIM/_MAP settings
(shared.auth.principal_from_claims). The session is a signed cookie of this service alone (its
own name, HttpOnly, SameSite=Lax so the provider's redirect back carries it, Secure in production)
holding who signed in and until when, and, during a sign-in, Authlib's state, nonce and PKCE verifier.
Signing out clears it and sends the browser to the provider's end_session_endpoint
(RP-initiated logout). Without OIDC_ISSUER the development token sign-in serves instead.
"""

from __future__ import annotations

import hashlib
import time
from urllib.parse import urlsplit

import structlog
from authlib.integrations.starlette_client import OAuth
from fastapi import FastAPI, Request

from shared.auth import NoFamaRole, Principal, principal_from_claims
from shared.settings import ServiceSettings

log = structlog.get_logger(__name__)

SESSION_KEY = "fama"
CALLBACK_PATH = "/signin/callback"
START_PATH = "/signin/start"
SIGNED_OUT_PATH = "/signin/signed-out"


def enabled(settings: ServiceSettings) -> bool:
    return settings.oidc_issuer is not None


def session_cookie_name(settings: ServiceSettings, service: str) -> str:
    """One cookie per service: two services on one host (as in development) never overwrite each other's."""
    name = f"fama_session_{service}"
    return f"__Host-{name}" if settings.environment == "production" else name


def session_key(settings: ServiceSettings) -> str:
    secret = settings.session_secret or f"{settings.jwt_secret}|{settings.encryption_keys}|{settings.oidc_client_secret}"
    return hashlib.sha256(b"fama-session:" + secret.encode()).hexdigest()


def provider_origin(settings: ServiceSettings) -> str:
    parts = urlsplit(settings.oidc_issuer or "")
    return f"{parts.scheme}://{parts.netloc}"


def public_url(app: FastAPI) -> str:
    settings: ServiceSettings = app.state.settings
    return getattr(settings, f"{app.state.service}_public_url").rstrip("/")


def client(app: FastAPI):
    """The Authlib client of this app's provider (metadata discovered on first use, then cached)."""
    existing = getattr(app.state, "oidc_client", None)
    if existing is not None:
        return existing
    settings: ServiceSettings = app.state.settings
    oauth = OAuth()
    app.state.oidc_client = oauth.register(
        "idp",
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        server_metadata_url=f"{settings.oidc_issuer.rstrip('/')}/.well-known/openid-configuration",
        client_kwargs={"scope": settings.oidc_scopes, "code_challenge_method": "S256", "timeout": 10},
    )
    return app.state.oidc_client


async def start(request: Request, next_url: str):
    """Send the browser to the provider; Authlib keeps state, nonce and the PKCE verifier in the session."""
    request.session.pop(SESSION_KEY, None)
    request.session["next"] = next_url
    return await client(request.app).authorize_redirect(request, public_url(request.app) + CALLBACK_PATH)


class SignInFailed(Exception):
    """The callback could not be trusted or completed; the message is for the person signing in."""


async def finish(request: Request) -> tuple[Principal, str]:
    """Check the callback (state, code with PKCE, ID token's issuer, audience, nonce, expiry) and map its claims.

    Raises SignInFailed or NoFamaRole; on either the session holds no one.
    """
    settings: ServiceSettings = request.app.state.settings
    error = request.query_params.get("error")
    try:
        token = await client(request.app).authorize_access_token(request)
    except Exception as exc:  # any failure of the exchange refuses the sign-in; the reason goes to the log only
        log.info("sso.callback_refused", reason=type(exc).__name__, provider_error=error)
        if error == "access_denied":
            raise SignInFailed(f"{settings.oidc_provider_name} did not sign you in (it was cancelled or refused)."
                               ) from exc
        raise SignInFailed("This sign-in could not be checked: it was started in another browser or window, "
                           "used already, or altered on the way.") from exc
    claims = token.get("userinfo")
    if not claims:
        log.info("sso.callback_refused", reason="no id_token")
        raise SignInFailed("The identity provider did not send an ID token.")
    principal = principal_from_claims(settings, dict(claims))
    next_url = request.session.pop("next", "/")
    request.session[SESSION_KEY] = {"sub": principal.subject, "role": principal.role.value, "site": principal.site,
                                    "region": principal.region, "until": time.time() + settings.session_hours * 3600}
    log.info("sso.signed_in", role=principal.role.value, site=principal.site)
    return principal, next_url


def session_principal(request: Request) -> Principal | None:
    """Who this browser's session is, or None (no session, or it has ended: see session_expired)."""
    if "session" not in request.scope:
        return None
    held = request.session.get(SESSION_KEY)
    if not isinstance(held, dict) or held.get("until", 0) < time.time():
        return None
    return Principal(subject=held["sub"], role=held["role"], site=held.get("site"), region=held.get("region"))


def session_expired(request: Request) -> bool:
    if "session" not in request.scope:
        return False
    held = request.session.get(SESSION_KEY)
    return isinstance(held, dict) and held.get("until", 0) < time.time()


async def end_session_url(request: Request) -> str | None:
    """The provider's sign-out address for this browser (RP-initiated logout), or None if it has none."""
    settings: ServiceSettings = request.app.state.settings
    try:
        result = await client(request.app).create_logout_url(
            post_logout_redirect_uri=public_url(request.app) + SIGNED_OUT_PATH, client_id=settings.oidc_client_id)
    except Exception as exc:  # no end_session_endpoint, or the provider unreachable: sign out here only
        log.warning("sso.no_provider_sign_out", reason=type(exc).__name__)
        return None
    return result["url"]


__all__ = ["NoFamaRole", "SignInFailed", "enabled", "finish", "start", "session_principal", "session_expired",
           "end_session_url", "session_cookie_name", "session_key", "provider_origin", "SESSION_KEY"]

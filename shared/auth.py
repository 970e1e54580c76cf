"""Bearer JWTs carrying a role, a site and a region.

Locally tokens are HS256 with ``JWT_SECRET`` (``fama token`` issues them); in production
they are RS256 tokens from an OIDC provider, verified against its JWKS URL. Every token
needs ``exp``, and one valid for longer than ``JWT_MAX_LIFETIME_HOURS`` (``exp - iat``, or
``exp - now`` without ``iat``) is refused in every environment. Missing or invalid tokens
get 401; a valid token with the wrong role or site gets 403. Both bodies say what to do,
never why the decoder refused (that goes to the log, without the token).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from enum import StrEnum
from functools import lru_cache
from typing import Annotated

import jwt
import structlog
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from shared.settings import ServiceSettings

log = structlog.get_logger(__name__)

SIGN_IN_AGAIN = "your sign-in is missing, invalid or expired: sign in again with a new token"


class TokenTooLong(jwt.InvalidTokenError):
    """A token valid for longer than JWT_MAX_LIFETIME_HOURS."""


class Role(StrEnum):
    keyworker = "keyworker"
    site_lead = "site_lead"
    commissioner = "commissioner"
    admin = "admin"


class Principal(BaseModel):
    subject: str
    role: Role
    site: str | None = None
    region: str | None = None

    def may_act_for_site(self, site_id: str | None) -> bool:
        if self.role == Role.admin:
            return True
        return self.role in (Role.keyworker, Role.site_lead) and self.site is not None and self.site == site_id


def issue_token(settings: ServiceSettings, *, role: Role | str, site: str | None = None, region: str | None = None,
                subject: str = "dev-user", ttl: dt.timedelta | None = None) -> str:
    """An HS256 token; its lifetime defaults to, and may not exceed, JWT_MAX_LIFETIME_HOURS."""
    longest = dt.timedelta(hours=settings.jwt_max_lifetime_hours)
    ttl = longest if ttl is None else ttl
    if ttl > longest:
        raise ValueError(f"a token may live at most {settings.jwt_max_lifetime_hours:g} hours "
                         "(JWT_MAX_LIFETIME_HOURS)")
    now = dt.datetime.now(dt.UTC)
    claims = {
        "sub": subject,
        "role": str(Role(role)),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl,
    }
    if site:
        claims["site"] = site
    if region:
        claims["region"] = region
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


@lru_cache(maxsize=4)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=3600)


def decode_token(settings: ServiceSettings, token: str) -> Principal:
    options = {"require": ["exp", "sub", "role"]}
    if settings.jwt_jwks_url:
        key = _jwks_client(settings.jwt_jwks_url).get_signing_key_from_jwt(token).key
        claims = jwt.decode(token, key, algorithms=["RS256", "ES256"], audience=settings.jwt_audience,
                            issuer=settings.jwt_issuer, options=options)
    else:
        claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"], audience=settings.jwt_audience,
                            issuer=settings.jwt_issuer, options=options)
    try:
        lifetime = float(claims["exp"]) - float(claims.get("iat", dt.datetime.now(dt.UTC).timestamp()))
    except (TypeError, ValueError) as exc:
        raise jwt.InvalidTokenError("exp or iat is not a number") from exc
    if lifetime > settings.jwt_max_lifetime_hours * 3600:
        raise TokenTooLong("the token is valid for longer than JWT_MAX_LIFETIME_HOURS")
    return Principal(subject=claims["sub"], role=claims["role"], site=claims.get("site"), region=claims.get("region"))


_bearer = HTTPBearer(auto_error=False)


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def current_principal(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    if creds is None:
        raise _unauthorised(SIGN_IN_AGAIN)
    settings: ServiceSettings = request.app.state.settings
    try:
        return decode_token(settings, creds.credentials)
    except (jwt.PyJWTError, ValueError) as exc:
        log.info("auth.token_refused", reason=type(exc).__name__)
        raise _unauthorised(SIGN_IN_AGAIN) from exc


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency admitting only the given roles."""

    def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                detail=f"your role ({principal.role.value}) may not do this: it needs one of the "
                                       f"roles {allowed}; ask an administrator if you need it")
        return principal

    return dependency


def ensure_site(principal: Principal, site_id: str | None) -> None:
    """403 unless the principal acts for ``site_id`` (admins act for every site)."""
    if not principal.may_act_for_site(site_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail="your role may not act for another site: you can only act for your own site")


AdminOnly = Annotated[Principal, Depends(require_roles(Role.admin))]
SiteStaff = Annotated[Principal, Depends(require_roles(Role.keyworker, Role.site_lead, Role.admin))]

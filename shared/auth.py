"""Bearer JWTs carrying a role, a site and a region.

Locally tokens are HS256 with ``JWT_SECRET`` (``fama token`` issues them); in production
they are RS256 tokens from an OIDC provider, verified against its JWKS URL, whose role, site
and region are read from the claims OIDC_ROLE_CLAIM... names, through their maps (the same
mapping the pages' single sign-on uses, shared.sso). Every token
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


class NoFamaRole(jwt.InvalidTokenError):
    """A genuine token or sign-in whose claims give no usable FAMA role (or no single site)."""


# When several claim values map to roles, the first of these wins.
ROLE_PRECEDENCE = ("admin", "commissioner", "site_lead", "keyworker")


def _claim_values(claims: dict, name: str) -> list[str]:
    value = claims.get(name)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [str(v) for v in values if isinstance(v, str | int) and str(v)]


def _mapped(values: list[str], mapping: dict[str, str]) -> list[str]:
    found = [mapping[v] for v in values if v in mapping] if mapping else values
    return list(dict.fromkeys(found))


def principal_from_claims(settings: ServiceSettings, claims: dict) -> Principal:
    """FAMA's role, site and region from an identity provider's claims, as configured (OIDC_*_CLAIM/_MAP).

    Raises NoFamaRole saying what is missing: it is shown to the person signing in.
    """
    roles = [r for r in _mapped(_claim_values(claims, settings.oidc_role_claim), settings.oidc_role_map)
             if r in ROLE_PRECEDENCE]
    if not roles:
        raise NoFamaRole(f"your account has no FAMA role (nothing in its '{settings.oidc_role_claim}' claim "
                         "gives one)")
    role = min(roles, key=ROLE_PRECEDENCE.index)
    sites = _mapped(_claim_values(claims, settings.oidc_site_claim), settings.oidc_site_map)
    regions = _mapped(_claim_values(claims, settings.oidc_region_claim), settings.oidc_region_map)
    if len(sites) > 1:
        raise NoFamaRole(f"your account belongs to more than one FAMA site ({', '.join(sites)}); FAMA needs exactly one")
    if len(regions) > 1:
        raise NoFamaRole(f"your account belongs to more than one region ({', '.join(regions)}); FAMA needs one")
    if role in ("keyworker", "site_lead") and not sites:
        raise NoFamaRole(f"your account has the role {role.replace('_', ' ')} but no FAMA site (nothing in its "
                         f"'{settings.oidc_site_claim}' claim gives one)")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise jwt.MissingRequiredClaimError("sub")
    return Principal(subject=subject, role=role, site=sites[0] if sites else None,
                     region=regions[0] if regions else None)


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
    if settings.jwt_jwks_url:
        key = _jwks_client(settings.jwt_jwks_url).get_signing_key_from_jwt(token).key
        claims = jwt.decode(token, key, algorithms=["RS256", "ES256"], audience=settings.jwt_audience,
                            issuer=settings.jwt_issuer, options={"require": ["exp", "sub"]})
    else:
        options = {"require": ["exp", "sub", "role"]}
        claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"], audience=settings.jwt_audience,
                            issuer=settings.jwt_issuer, options=options)
    try:
        lifetime = float(claims["exp"]) - float(claims.get("iat", dt.datetime.now(dt.UTC).timestamp()))
    except (TypeError, ValueError) as exc:
        raise jwt.InvalidTokenError("exp or iat is not a number") from exc
    if lifetime > settings.jwt_max_lifetime_hours * 3600:
        raise TokenTooLong("the token is valid for longer than JWT_MAX_LIFETIME_HOURS")
    if settings.jwt_jwks_url:
        return principal_from_claims(settings, claims)
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
    except NoFamaRole as exc:
        log.info("auth.no_fama_role")
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail=f"{exc}: ask an administrator to give your account a FAMA role") from exc
    except (jwt.PyJWTError, ValueError) as exc:
        log.info("auth.token_refused", reason=type(exc).__name__)
        raise _unauthorised(SIGN_IN_AGAIN) from exc


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency admitting only the given roles. ``async``: it does no I/O, and as a plain
    ``def`` it cost every request that uses it a hand-off to a worker thread and back."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
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

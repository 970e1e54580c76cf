"""Bearer headers for test requests, signed like ``fama token`` does."""

from __future__ import annotations


def token_for(role: str, site: str | None = None, region: str | None = None) -> str:
    from shared.auth import issue_token
    from shared.settings import ServiceSettings

    return issue_token(ServiceSettings(), role=role, site=site, region=region)


def auth(role: str, site: str | None = None, region: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(role, site, region)}"}

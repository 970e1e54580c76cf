"""The audit trail page (/desk/audit): site leads see their own site's, admins every site's."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from services.referrals import audit
from services.referrals.pages import long_datetime, templates
from services.referrals.runtime import runtime
from shared.auth import Principal, Role
from shared.pages import render, require_page_roles

router = APIRouter(prefix="/desk/audit", include_in_schema=False)
SessionDep = Annotated[Session, Depends(runtime.get_session)]
Readers = Annotated[Principal, Depends(require_page_roles(Role.site_lead, Role.admin))]
PAGE_SIZE = 50


def _day(value: str, field: str, errors: dict[str, str]) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        errors[field] = "Enter a date like 2026-11-24"
        return None


@router.get("", response_class=HTMLResponse)
def audit_trail(request: Request, session: SessionDep, principal: Readers, referral: str = "", actor: str = "",
                site: str = "", since: str = "", until: str = "", page: str = "1"):
    errors: dict[str, str] = {}
    referral_id = None
    if referral:
        try:
            referral_id = uuid.UUID(referral.strip())
        except ValueError:
            errors["referral"] = "Enter a referral's identifier as shown on its page, or leave it empty"
    first_day, last_day = _day(since, "since", errors), _day(until, "until", errors)
    site_id = (site[:64] or None) if principal.role == Role.admin else principal.site
    page_no = int(page) if page.isdigit() and 0 < int(page) < 100_000 else 1
    rows, total = audit.entries(session, site_id=site_id, referral_id=referral_id, actor=actor[:200] or None,
                                since=audit.day_start(first_day), until=audit.day_start(last_day, next_day=True),
                                limit=PAGE_SIZE, offset=(page_no - 1) * PAGE_SIZE)
    filters = {k: v for k, v in (("referral", referral), ("actor", actor), ("site", site), ("since", since),
                                 ("until", until)) if v}
    pages = max(1, -(-total // PAGE_SIZE))
    return render(templates, request, "audit.html", {
        "title": f"{'Error: ' if errors else ''}Audit trail", "principal": principal, "errors": errors,
        "filters": filters, "is_admin": principal.role == Role.admin, "total": total,
        "entries": [{"at": long_datetime(r.at), "actor": r.actor, "role": (r.actor_role or "").replace("_", " "),
                     "site": r.site_id, "referral": str(r.referral_id),
                     "action": audit.ACTION_NAMES.get(r.action, r.action), "detail": r.detail, "via": r.via}
                    for r in rows],
        "page": page_no, "pages": pages,
        "prev_url": f"?{urlencode({**filters, 'page': page_no - 1})}" if page_no > 1 else None,
        "next_url": f"?{urlencode({**filters, 'page': page_no + 1})}" if page_no < pages else None,
    }, status_code=400 if errors else 200)

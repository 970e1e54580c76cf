"""Engagement: counters per site, fellowship and ISO week, and what each reader may see of them.

Everything about the concept lives here: the metric vocabulary, counting facts from events
(the handlers call ``count_facts``), the read model (``read`` / ``tabulate``), who may see
which sites (``scope_of``), disclosure control for commissioners (``rounded``) and the CSV
both downloads share (``csv_text``). The API and the dashboard only present what this
module returns.

Disclosure control (docs/DISCLOSURE.md): commissioners see rounded figures only. Each
counter - one metric for one site, fellowship and week, the finest cell anyone can ask
for - is randomly rounded to a multiple of 5, up with probability (count mod 5)/5, using a
draw kept with the counter. Every other figure (a site's total, a region's, a week's, a
fellowship's, any filter, the CSV) is the *sum of those rounded counters*, never a rounding
of an exact total. So everything a commissioner can see is a function of the rounded
counters alone, and each non-zero rounded counter is consistent with at least four true
counts: no subtraction, filter or combination of figures can recover a count from 1 to 4.
Rounding exact totals instead (the usual "round every figure to 5") does not survive
arithmetic: see the worked example in docs/DISCLOSURE.md and tests/services/directory/
test_disclosure.py. A non-zero figure that rounds to 0 is shown as "<5"; zero is zero.
Admins, and site staff reading their own site, see exact counts.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import secrets
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.directory import service
from services.directory.models import EngagementCount, EngagementFact, Site
from shared.auth import Principal, Role
from shared.db import dialect_insert
from shared.errors import Forbidden
from shared.events import Stage

LONDON = ZoneInfo("Europe/London")

# --- the vocabulary -----------------------------------------------------------------------

METRICS = (
    "referrals_made", "contact_arranged", "first_meeting_attended", "accompanied", "followed_up",
    "did_not_engage", "declined", "consent_withdrawn", "reminders_sent", "reminders_delivered",
    "reminders_failed", "opted_out", "client_reported_attended", "attendance_confirmed",
)
STAGE_METRICS = {
    Stage.contact_arranged: "contact_arranged",
    Stage.first_meeting_attended: "first_meeting_attended",
    Stage.followed_up: "followed_up",
    Stage.did_not_engage: "did_not_engage",
    Stage.declined: "declined",
}
# When an event carries no business status, the FHIR status says as much.
STATUS_METRICS = {"accepted": "contact_arranged", "completed": "followed_up", "failed": "did_not_engage",
                  "cancelled": "declined"}


def week_start(moment: dt.datetime) -> dt.date:
    """Monday of the ISO week (in UK local time) of ``moment``."""
    local = moment.astimezone(LONDON).date() if moment.tzinfo else moment.date()
    return local - dt.timedelta(days=local.weekday())


def iso_week(monday: dt.date) -> str:
    year, week, _ = monday.isocalendar()
    return f"{year}-W{week:02d}"


def stage_metrics(*, business_status: str | None, to_status: str | None, accompanied: bool | None,
                  client_reported: bool | None = None) -> list[str]:
    metrics = []
    # Attendance the client reported by text and a keyworker confirmed (counted apart from the client's own word).
    if client_reported and business_status == Stage.first_meeting_attended:
        metrics.append("attendance_confirmed")
    if business_status in STAGE_METRICS:
        metrics.append(STAGE_METRICS[Stage(business_status)])
    elif business_status is None and to_status in STATUS_METRICS:
        metrics.append(STATUS_METRICS[to_status])
    if accompanied:
        metrics.append("accompanied")
    return metrics


# --- counting from events -----------------------------------------------------------------

@functools.cache
def _counting(dialect: str):
    """The two statements counting facts: a fact once ever, and a counter by one. Built once per
    database kind: executing them skips building them again, and each takes many rows at once."""
    facts = (dialect_insert(dialect, EngagementFact).on_conflict_do_nothing(index_elements=["subject", "metric"])
             .returning(EngagementFact.metric))
    counts = dialect_insert(dialect, EngagementCount).on_conflict_do_update(
        index_elements=["site_id", "fellowship", "week_start", "metric"], set_={"count": EngagementCount.count + 1})
    return facts, counts


def count_facts(session: Session, *, subject: str, metrics: Iterable[str], site_id: str, fellowship: str,
                occurred_at: dt.datetime) -> list[str]:
    """Count each of ``metrics`` for ``subject`` once ever, in two round trips however many they
    are (the facts, then the counters of those that were new); returns the new ones."""
    where = {"site_id": site_id, "fellowship": fellowship, "week_start": week_start(occurred_at)}
    facts = [{"subject": subject, "metric": metric, "occurred_at": occurred_at, **where}
             for metric in sorted(set(metrics))]
    if not facts:
        return []
    fact_stmt, count_stmt = _counting(session.get_bind().dialect.name)
    new = sorted(session.scalars(fact_stmt, facts))
    if new:
        # A new counter draws its rounding point once; later counts keep it (see ``rounded``). Rows in
        # key order, so two workers counting the same counters lock them in the same order.
        session.execute(count_stmt, [{"metric": metric, "count": 1, "rounding_point": secrets.randbelow(BASE), **where}
                                     for metric in new])
    return new


# --- disclosure control -------------------------------------------------------------------

BASE = 5
SMALL = "<5"  # a figure that is not zero but rounds to 0


def rounded(count: int, rounding_point: int) -> int:
    """Unbiased random rounding to base 5 of one counter.

    ``rounding_point`` is a uniform draw from 0-4 stored with the counter: the count rounds up
    when its remainder exceeds it, so with probability remainder/5, and on average figures
    are right. The draw is secret and fixed, so asking again gives the same answer.
    """
    below = count - count % BASE
    return below + BASE if count % BASE > rounding_point else below


@dataclass
class Tally:
    """One figure: the exact sum of its counters and the sum of their rounded values."""

    exact: int = 0
    rounded_sum: int = 0
    small: bool = False  # some counter in it is 1-4 and rounded down to 0

    def add(self, count: int, rounding_point: int) -> None:
        shown = rounded(count, rounding_point)
        self.exact += count
        self.rounded_sum += shown
        self.small = self.small or (count > 0 and shown == 0)

    def shown(self, protected: bool) -> int | str:
        if not protected:
            return self.exact
        return SMALL if self.rounded_sum == 0 and self.small else self.rounded_sum


# --- who may see which sites --------------------------------------------------------------

class NotVisible(Forbidden):
    """The principal may not see these figures (403); the message says why."""


@dataclass(frozen=True)
class Scope:
    """What one principal may read: the sites shown and whether figures are protected."""

    title: str
    sites: tuple = ()  # registered sites shown (objects with id, name, region)
    site_ids: tuple[str, ...] | None = None  # counters read: these sites, None for every site
    protected: bool = False
    region: str | None = None


def visible_site(session: Session, principal: Principal, site_id: str) -> Site:
    """The site if the principal may see it: admins all, commissioners their region, staff their own."""
    if principal.role in (Role.keyworker, Role.site_lead) and not principal.may_act_for_site(site_id):
        raise NotVisible("you can only act for your own site")
    site = service.get_site(session, site_id)
    if principal.role == Role.commissioner and (not principal.region or site.region != principal.region):
        raise NotVisible("commissioners see the sites of their own region only")
    return site


def visible_sites(principal: Principal):
    """A query of the sites the principal may see, by id."""
    query = select(Site).order_by(Site.id)
    if principal.role == Role.commissioner:
        return query.where(Site.region == (principal.region or ""))
    if principal.role != Role.admin:
        return query.where(Site.id == (principal.site or ""))
    return query


def scope_of(session: Session, principal: Principal, *, region: str = "", site_id: str | None = None) -> Scope:
    """One site (if asked and visible); else admins every site or one ``region``, commissioners
    their region, site staff their own site. Only commissioners' figures are protected."""
    protected = principal.role == Role.commissioner
    if site_id is not None:
        site = visible_site(session, principal, site_id)
        return Scope(site.name, (site,), (site.id,), protected)
    if principal.role == Role.commissioner:
        if not principal.region:
            raise NotVisible("Your sign-in does not name a region, so there is nothing to show.")
        region = principal.region
    elif principal.role == Role.admin and not region:
        sites = tuple(session.scalars(select(Site).order_by(Site.region, Site.name)))
        return Scope("All regions", sites, None, protected)
    if region:
        sites = tuple(session.scalars(select(Site).where(Site.region == region).order_by(Site.name)))
        return Scope(f"{region} region", sites, tuple(s.id for s in sites), protected, region)
    if not principal.site:
        raise NotVisible("Your sign-in does not name a site, so there is nothing to show.")
    site = session.get(Site, principal.site)
    return Scope(site.name if site else principal.site, (site,) if site else (), (principal.site,), protected)


# --- the read model -----------------------------------------------------------------------

class Cell(NamedTuple):
    """One counter as the read model sees it (an ``EngagementCount`` row has the same fields)."""

    site_id: str
    fellowship: str
    week_start: dt.date
    metric: str
    count: int
    rounding_point: int


def first_week(date_from: dt.date | None) -> dt.date | None:
    return date_from - dt.timedelta(days=date_from.weekday()) if date_from else None


def in_view(cell, *, site_ids, date_from: dt.date | None, date_to: dt.date | None, fellowship: str | None) -> bool:
    """Whether a counter is inside the filters: whole ISO weeks touching the period."""
    return ((site_ids is None or cell.site_id in site_ids)
            and (date_from is None or cell.week_start >= first_week(date_from))
            and (date_to is None or cell.week_start <= date_to)
            and (not fellowship or cell.fellowship == fellowship))


@dataclass
class _Figures:
    by_metric: dict = field(default_factory=lambda: {m: Tally() for m in METRICS})

    def shown(self, protected: bool) -> dict[str, int | str]:
        return {m: t.shown(protected) for m, t in self.by_metric.items()}


def tabulate(cells: Iterable, *, scope: Scope, date_from: dt.date | None = None, date_to: dt.date | None = None,
             fellowship: str | None = None) -> dict:
    """Every figure the scope may see for these filters, each a sum over counters.

    Returns totals, weeks (those with counts), sites (the scope's and any counted), regions,
    fellowships and rows (week x site x fellowship); each has ``counts`` by metric, exact or
    protected as the scope says.
    """
    known = {s.id: s for s in scope.sites}
    totals = _Figures()
    weeks: dict = defaultdict(_Figures)
    sites: dict = {s.id: _Figures() for s in scope.sites}
    regions: dict = {s.region: _Figures() for s in scope.sites}
    fellowships: dict = defaultdict(_Figures)
    rows: dict = defaultdict(_Figures)
    for cell in cells:
        if cell.metric not in METRICS or not in_view(cell, site_ids=scope.site_ids, date_from=date_from,
                                                     date_to=date_to, fellowship=fellowship):
            continue
        site = known.get(cell.site_id)
        for figures in (totals, weeks[cell.week_start], sites.setdefault(cell.site_id, _Figures()),
                        regions.setdefault(site.region if site else None, _Figures()),
                        fellowships[cell.fellowship], rows[(cell.week_start, cell.site_id, cell.fellowship)]):
            figures.by_metric[cell.metric].add(cell.count, cell.rounding_point)

    def about(site_id: str) -> dict:
        site = known.get(site_id)
        return {"site_id": site_id, "name": site.name if site else None, "region": site.region if site else None}

    shown = scope.protected
    return {
        "protected": shown,
        "totals": totals.shown(shown),
        "weeks": [{"week": iso_week(w), "week_start": w, "counts": weeks[w].shown(shown)} for w in sorted(weeks)],
        "sites": [{**about(s), "counts": sites[s].shown(shown)} for s in sorted(sites)],
        "regions": [{"region": r, "counts": regions[r].shown(shown)}
                    for r in sorted(regions, key=lambda r: (r is None, r or ""))],
        "fellowships": [{"fellowship": f, "counts": fellowships[f].shown(shown)} for f in sorted(fellowships)],
        "rows": [{"week": iso_week(w), "week_start": w, **about(s), "fellowship": f, "counts": c.shown(shown)}
                 for (w, s, f), c in sorted(rows.items())],
    }


def read(session: Session, *, scope: Scope, date_from: dt.date | None = None, date_to: dt.date | None = None,
         fellowship: str | None = None) -> dict:
    """``tabulate`` over the stored counters (the query narrows what is read; tabulate decides)."""
    query = select(EngagementCount)
    if scope.site_ids is not None:
        query = query.where(EngagementCount.site_id.in_(scope.site_ids))
    if date_from is not None:
        query = query.where(EngagementCount.week_start >= first_week(date_from))
    if date_to is not None:
        query = query.where(EngagementCount.week_start <= date_to)
    if fellowship:
        query = query.where(EngagementCount.fellowship == fellowship)
    return tabulate(session.scalars(query), scope=scope, date_from=date_from, date_to=date_to, fellowship=fellowship)


# --- CSV ------------------------------------------------------------------------------------

CSV_COLUMNS = ("week", "week_start", "region", "site_id", "site", "fellowship", *METRICS)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A text cell a spreadsheet would run as a formula gets a leading apostrophe (OWASP)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_rows(figures: dict) -> list[list]:
    """The header and one row per week, site and fellowship: the same for every download."""
    out = [list(CSV_COLUMNS)]
    for row in figures["rows"]:
        out.append([spreadsheet_safe(v) for v in (
            row["week"], row["week_start"].isoformat(), row["region"] or "", row["site_id"], row["name"] or "",
            row["fellowship"], *(row["counts"][m] for m in METRICS))])
    return out


def csv_text(figures: dict) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(csv_rows(figures))
    return out.getvalue()

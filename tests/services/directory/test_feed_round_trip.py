"""A feed imported and exported again says what it said: field by field in the spec's terms, and as TSML UI shows it.

The normalisations accepted, and why (each is one the spec allows or asks for):

- ``time`` / ``end_time`` become the spec's "HH:MM" 24-hour form ("7:30 PM" -> "19:30", "19:30:00" -> "19:30").
- ``day`` becomes an integer ("1" -> 1); a list stays a list, sorted and without repeats (the days are a set).
- ``types`` are compared as a set: a code twice is one code, and their order means nothing in the spec.
- Text is trimmed of surrounding white space, and an empty value is the same as no value ("can be omitted").
- ``timezone``, optional in the spec, is filled in with the timezone the feed was imported in when a row has none:
  that is what the importer was told the times mean, and finders need it to place them.
- ``attendance_option`` (the 12 Step Meeting List plugin's field, not the spec's) is kept when given and added,
  read from the row as that plugin and TSML UI read it, when not.
- ``entity_website_url`` (the spec's field list) goes out as ``entity_url`` (the spec's example, TSML UI, real feeds).
- ``updated``, when a row has none, goes out as the time the meeting was last changed here (a finder that shows
  it then shows when FAMA last had news of the listing); one the row has goes out as it came.
- Fields the spec does not define (``id``, ``location_id``, ``time_formatted``, ``location_url``, ``region_id``,
  ``group_id``, ``district_id``, ``last_contact``) are not kept.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.directory import feeds, service
from services.directory.api import app
from services.directory.models import Meeting
from services.directory.reference import TYPE_NAMES
from services.directory.runtime import runtime
from services.directory.schemas import MeetingIn
from tests.services.directory.helpers import FEEDS, meeting
from tests.support.auth import auth

pytestmark = pytest.mark.usefixtures("clean_state")
client = TestClient(app)
ADMIN = auth("admin")
FEED = "/feeds/meeting-guide.json"
REAL_FEEDS = ("sussexaa", "al-anon", "atlanta")

# Every field code4recovery/spec's README defines (its "Field Definitions"), and TSML UI's sub_sub_region.
SPEC_FIELDS = (
    "name", "slug", "day", "time", "end_time", "timezone", "formatted_address", "address", "city", "state",
    "postal_code", "country", "region", "sub_region", "sub_sub_region", "regions", "conference_url",
    "conference_url_notes", "conference_phone", "conference_phone_notes", "types", "notes", "location",
    "location_notes", "latitude", "longitude", "approximate", "updated", "group", "group_notes", "venmo", "square",
    "paypal", "homegroup_online", "url", "edit_url", "feedback_emails", "feedback_url", "entity", "entity_email",
    "entity_location", "entity_logo", "entity_phone", "entity_url",
    *(f"contact_{n}_{part}" for n in (1, 2, 3) for part in ("name", "email", "phone")),
    # Not in the spec's list, but in every real feed here (the 12 Step Meeting List plugin's) and read by TSML UI.
    "attendance_option", "district", "website", "email", "phone",
)
TIME_FORMATS = ("%H:%M", "%H:%M:%S", "%I:%M %p", "%I:%M%p", "%I %p", "%I%p")


def hh_mm(value: str) -> str:
    for form in TIME_FORMATS:
        try:
            return dt.datetime.strptime(value.strip().upper().replace(".", ""), form).strftime("%H:%M")
        except ValueError:
            continue
    raise AssertionError(f"not a time: {value!r}")


def in_spec_terms(row: dict, *, timezone: str) -> dict:
    """What a feed row says, field by field, after the normalisations listed above."""
    out = {}
    for field in SPEC_FIELDS:
        value = row.get(field)
        if field == "entity_url" and value is None:
            value = row.get("entity_website_url")
        if isinstance(value, str):
            value = value.strip()
        if value in (None, "", []):
            continue
        if field in ("time", "end_time"):
            value = hh_mm(value)
        elif field == "day":
            value = sorted({int(d) for d in value}) if isinstance(value, list) else int(value)
        elif field == "types":
            value = set(value)
        elif field in ("latitude", "longitude"):
            value = float(value)
        elif field == "approximate":
            value = value.lower()
        out[field] = value
    out.setdefault("timezone", timezone)
    return out


def load(name: str) -> list[dict]:
    return json.loads((FEEDS / f"{name}.json").read_text())


def import_body(rows, source: str, timezone: str = "America/New_York") -> dict:
    response = client.post(f"/feeds/import?source={source}&timezone={timezone}", json=rows, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def exported() -> dict[str, dict]:
    response = client.get(FEED)
    assert response.status_code == 200
    rows = response.json()
    assert len({r["slug"] for r in rows}) == len(rows)
    return {r["slug"]: r for r in rows}


@pytest.mark.parametrize("name", REAL_FEEDS)
def test_every_meeting_of_every_real_feed_goes_out_with_the_fields_it_came_in_with(name):
    rows = load(name)
    report = import_body(rows, name)
    assert report["rejected"] == [] and report["created"] == len(rows)
    out = exported()
    assert set(out) == {r["slug"] for r in rows}
    for row in rows:
        before, after = in_spec_terms(row, timezone="America/New_York"), in_spec_terms(out[row["slug"]],
                                                                                     timezone="none given")
        assert after == before, (row["slug"], {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                                               if before.get(k) != after.get(k)})
        # Nothing invented: no approximate, address or anything else the row did not have.
        assert set(out[row["slug"]]) - set(row) <= {"timezone", "fellowship"}


# --- TSML UI's reading of a feed ----------------------------------------------------------------------------------
# A restatement, for the tests, of what code4recovery/tsml-ui makes of each meeting when it loads a feed
# (src/helpers/load-meeting-data.ts and src/hooks/settings.tsx, read at commit fef58db): which meetings it lists
# under which slugs, and for each: when, where, whether in person, online, active, its regions and types.
CONFERENCE_PROVIDERS = (
    "bluejeans.com", "discord.gg", "freeconference.com", "freeconferencecall.com", "goto.com", "gotomeet.me",
    "gotomeeting.com", "horizon.meta.com", "maps.secondlife.com", "meet.google.com", "meet.jit.si",
    "meetings.dialpad.com", "signal.group", "skype.com", "slurl.com", "teams.live.com", "teams.microsoft.com",
    "vrchat.com", "webex.com", "zoho.com", "zoom.us",
)
IN_PERSON_TYPES = {"BA", "BRK", "CAN", "CF", "AL-AN", "AL", "FF", "OUT", "SM", "X", "XB"}
SHOWN_AS_GIVEN = (
    "name", "notes", "location", "location_notes", "group", "group_notes", "district", "email", "phone", "website",
    "edit_url", "feedback_url", "entity", "entity_location", "entity_phone", "entity_url",
    *(f"contact_{n}_{part}" for n in (1, 2, 3) for part in ("name", "email", "phone")),
)


def tsml_ui_sees(rows: list[dict], *, timezone: str) -> dict[str, dict]:
    meetings: dict[str, dict] = {}
    flat = []
    for row in rows:
        if isinstance(row.get("day"), list):
            flat += [{**row, "day": int(day), "slug": f"{row['slug']}-{day}"} for day in row["day"]]
        else:
            flat.append({**row, "day": int(row["day"]) if row.get("day") not in (None, "") else None})
    for row in flat:
        slug = row.get("slug")
        if not slug or slug in meetings:
            continue
        url = row.get("conference_url") or ""
        host = url.split("/")[2] if len(url.split("/")) > 2 else ""
        conference_url = url if any(host.endswith(p) for p in CONFERENCE_PROVIDERS) else None
        phone = re.sub(r"[^\d,+#]", "", row.get("conference_phone") or "")
        conference_phone = phone if len(phone) >= 10 else None
        formatted = row.get("formatted_address") or ", ".join(
            p for p in (row.get("address"), row.get("city"),
                        " ".join(x for x in (row.get("state"), row.get("postal_code")) if x), row.get("country")) if p)
        if not formatted:
            continue  # not listed: "no address information"
        stated = row.get("approximate")
        approximate = (stated.lower() == "yes" if isinstance(stated, str) else stated if isinstance(stated, bool)
                       else len(formatted.split(",")) < 4)
        types = {t for t in row.get("types") or [] if t in TYPE_NAMES and t != "ONL"}
        online = bool(conference_url or conference_phone)
        in_person = "TC" not in types and not approximate
        if not in_person:
            types -= IN_PERSON_TYPES
        regions = [r.strip() for r in row["regions"] if isinstance(r, str) and r.strip()] \
            if isinstance(row.get("regions"), list) else \
            [r for r in (row.get("region"), row.get("sub_region") if row.get("region") else None,
                         row.get("sub_sub_region") if row.get("sub_region") else None) if r] or \
            ([row["city"]] if row.get("city") else [])
        start = None
        if row.get("day") is not None and row.get("time"):  # parseInt of each part: "12:00 PM" is 12:00
            hour, minute = (int(re.match(r"\d+", n).group()) for n in row["time"].split(":")[:2])
            start = (row["day"], hour, minute, row.get("timezone") or timezone)
        meetings[slug] = {
            "start": start, "end_time": row.get("end_time"), "formatted_address": formatted,
            "address": None if approximate else (row.get("address") or formatted.split(",")[0]),
            "approximate": approximate, "online": online, "in_person": in_person, "active": online or in_person,
            "conference_url": conference_url, "conference_phone": conference_phone,
            "conference_url_notes": row.get("conference_url_notes") if conference_url else None,
            "conference_phone_notes": row.get("conference_phone_notes") if conference_phone else None,
            "map": (float(row["latitude"]), float(row["longitude"]))
            if in_person and row.get("latitude") and row.get("longitude") else None,
            "regions": regions, "types": types, "updated": row.get("updated"),
            "url": row.get("url") if (row.get("url") or "").startswith(("http://", "https://")) else None,
            "venmo": row.get("venmo") if (row.get("venmo") or "").startswith("@") else None,
            "square": row.get("square") if (row.get("square") or "").startswith("$") else None,
            "paypal": row.get("paypal"), "homegroup_online": row.get("homegroup_online"),
            **{field: row.get(field) for field in SHOWN_AS_GIVEN},
        }
    return meetings


@pytest.mark.parametrize("name", REAL_FEEDS)
def test_tsml_ui_shows_the_exported_feed_as_it_showed_the_imported_one(name):
    rows = load(name)
    import_body(rows, name)
    before = tsml_ui_sees(rows, timezone="America/New_York")
    after = tsml_ui_sees(list(exported().values()), timezone="Europe/London")  # the export says its timezone
    assert set(after) == set(before)
    for slug, shown in before.items():
        assert after[slug] == shown, (slug, {k: (shown[k], after[slug][k]) for k in shown if shown[k] != after[slug][k]})
    # The feeds have every kind: what TSML UI shows of them is not all the same.
    kinds = {(m["in_person"], m["online"]) for m in before.values()}
    assert len(kinds) >= (1 if name == "atlanta" else 3)


# Rows using every field the spec defines, in the lenient forms real feeds use.
EVERY_FIELD = [
    {
        "name": "Sunday Serenity", "slug": "sunday-serenity-14", "day": [0, "3"], "time": "18:00", "end_time": "19:30",
        "timezone": "America/Chicago", "location": "Alano Club", "group": "The Serenity Group",
        "notes": "Ring buzzer. Meeting is on the 2nd floor.", "updated": "2014-05-31 14:32:23",
        "url": "https://district123.org/meetings/sunday-serenity", "types": ["O", "T", "LGBTQ", "O", "XYZ"],
        "address": "4953 W Addison St", "city": "Chicago", "state": "IL", "postal_code": "60641", "country": "US",
        "approximate": "no", "latitude": 41.94631, "longitude": -87.75175,
        "regions": ["Chicago", "Portage Park"], "location_notes": "Side door",
        "conference_url": "https://zoom.us/j/123456789", "conference_url_notes": "Password 123",
        "conference_phone": "+13126266799,,123456789#", "conference_phone_notes": "Meeting ID 123 456 789",
        "group_notes": "Business meeting first Sunday", "venmo": "@SerenityGroup", "square": "$SerenityGroup",
        "paypal": "SerenityGroup", "homegroup_online": "serenity", "edit_url": "https://district123.org/edit/14",
        "feedback_emails": ["meetingupdates@district123.org"], "feedback_url": "mailto:web@district123.org?subject=14",
        "entity": "District 123", "entity_email": "info@district123.org",
        "entity_location": "Example County, Illinois", "entity_logo": "https://district123.org/images/logo.svg",
        "entity_phone": "+1-123-456-7890", "entity_website_url": "https://district123.org",
        "contact_1_name": "Bill", "contact_1_email": "bill@example.org", "contact_1_phone": "+1-312-555-0101",
        "contact_2_name": "Bob", "contact_2_email": "bob@example.org", "contact_2_phone": "+1-312-555-0102",
        "contact_3_name": "Lois", "contact_3_email": "lois@example.org", "contact_3_phone": "+1-312-555-0103",
        "attendance_option": "hybrid", "district": "District 123", "website": "https://serenity.example.org",
        "email": "group@serenity.example.org", "phone": "+1-312-555-0100",
    },
    {   # online only, with an area for an address; no approximate stated; region levels instead of regions
        "name": "Online Big Book", "slug": "online-bb", "day": "2", "time": "07:00:00",
        "formatted_address": "Chicago, IL, USA", "latitude": 41.88, "longitude": -87.63,
        "conference_url": "https://meet.google.com/abc-defg-hij", "types": ["B", "ONL", "TC"],
        "region": "Chicago", "sub_region": "Loop", "sub_sub_region": "West Loop",
    },
    {   # temporarily closed, no conference: inactive; the regions in the Google Sheet form
        "name": "Closed for repairs", "slug": "closed", "day": 5, "time": "12:00 PM", "types": ["TC", "C"],
        "formatted_address": "1 Main St, Evanston, IL 60201, USA", "regions": ["Evanston", "Downtown"],
    },
    {"name": "By appointment", "slug": "appointment", "city": "Chicago", "state": "IL", "phone": "+1-312-555-0199"},
]


def test_a_feed_using_every_spec_field_round_trips_in_spec_terms_and_as_tsml_ui_shows_it():
    report = import_body(EVERY_FIELD, "chicago", timezone="America/Chicago")
    assert report["rejected"] == [] and report["left_out"] == []
    out = exported()
    assert set(out) == {r["slug"] for r in EVERY_FIELD}  # the two-day row went out as one row again
    for row in EVERY_FIELD:
        before, after = in_spec_terms(row, timezone="America/Chicago"), in_spec_terms(out[row["slug"]], timezone="-")
        if "updated" not in before:  # a row that does not say goes out with when it was last changed here
            assert after.pop("updated")[:4] == str(dt.datetime.now(dt.UTC).year)
        if "attendance_option" not in before:  # added, as read from the row (checked below)
            assert after.pop("attendance_option") in ("in_person", "hybrid", "online", "inactive")
        assert after == before, row["slug"]
    assert out["sunday-serenity-14"]["day"] == [0, 3] and out["closed"]["time"] == "12:00"
    assert out["sunday-serenity-14"]["entity_url"] == "https://district123.org"
    assert "approximate" not in out["online-bb"] and out["online-bb"]["attendance_option"] == "online"
    assert out["closed"]["attendance_option"] == "inactive"
    before = tsml_ui_sees(EVERY_FIELD, timezone="America/Chicago")
    after = tsml_ui_sees(list(out.values()), timezone="Europe/London")
    assert set(after) == set(before)
    # The one difference, on purpose: TSML UI reads entity_url only, so the entity's site given as the spec's
    # entity_website_url now shows too.
    for slug in ("sunday-serenity-14-0", "sunday-serenity-14-3"):
        assert (before[slug]["entity_url"], after[slug]["entity_url"]) == (None, "https://district123.org")
        before[slug]["entity_url"] = after[slug]["entity_url"]
    for slug in ("online-bb", "closed", "appointment"):  # no `updated`: they say when they last changed here
        assert before[slug]["updated"] is None and after[slug]["updated"][:4] == str(dt.datetime.now(dt.UTC).year)
        before[slug]["updated"] = after[slug]["updated"]
    for slug, shown in before.items():
        assert after[slug] == shown, (slug, {k: (shown[k], after[slug][k]) for k in shown if shown[k] != after[slug][k]})
    assert (before["sunday-serenity-14-0"]["in_person"], before["sunday-serenity-14-0"]["online"]) == (True, True)
    assert (before["online-bb"]["in_person"], before["online-bb"]["online"]) == (False, True)
    assert before["closed"]["active"] is False and before["closed"]["regions"] == ["Evanston", "Downtown"]
    # Inside, each day is a meeting of its own (to refer clients to, to remind them of).
    with runtime.sessions() as session:
        slugs = set(session.scalars(select(Meeting.slug).where(Meeting.source == "chicago")))
        contact = session.scalar(select(Meeting).where(Meeting.slug == "sunday-serenity-14-sunday")).contact_1_email
    assert slugs == {"sunday-serenity-14-sunday", "sunday-serenity-14-wednesday", "online-bb", "closed", "appointment"}
    assert contact == "bill@example.org"


def test_contacts_are_encrypted_at_rest():
    import_body(EVERY_FIELD[:1], "chicago", timezone="America/Chicago")
    with runtime.engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT contact_1_name, contact_1_email, contact_1_phone, entity FROM meetings "
                                   "WHERE slug = 'sunday-serenity-14-sunday'").one()
    assert "Bill" not in raw[0] and "bill@" not in raw[1] and "555" not in raw[2] and raw[3] == "District 123"


def test_one_day_of_a_multi_day_row_changed_here_goes_out_on_its_own():
    import_body(EVERY_FIELD[:1], "chicago", timezone="America/Chicago")
    with runtime.transaction() as session:
        stored = session.scalar(select(Meeting).where(Meeting.slug == "sunday-serenity-14-wednesday"))
        changed = MeetingIn.model_validate({**service.meeting_in_of(stored), "time": "18:30"})
        service.update_meeting(session, slug=stored.slug, meeting_in=changed, by="admin")
    out = exported()
    assert set(out) == {"sunday-serenity-14-sunday", "sunday-serenity-14-wednesday"}
    assert (out["sunday-serenity-14-sunday"]["day"], out["sunday-serenity-14-wednesday"]["time"]) == (0, "18:30")
    # Changed here, its listing was updated now, not when the source last changed it.
    assert out["sunday-serenity-14-sunday"]["updated"] == "2014-05-31 14:32:23"
    assert out["sunday-serenity-14-wednesday"]["updated"][:4] == str(dt.datetime.now(dt.UTC).year)


def test_approximate_is_never_invented_for_imported_rows_and_follows_attendance_for_meetings_entered_here():
    rows = [{"slug": "no-say", "name": "No say", "day": 1, "time": "19:00", "latitude": 41.9, "longitude": -87.7,
             "formatted_address": "Chicago, IL, USA", "conference_url": "https://zoom.us/j/1"}]
    import_body(rows, "chicago", timezone="America/Chicago")
    with runtime.transaction() as session:
        for slug, attendance, extra in (("here-in-person", "in_person", {}),
                                        ("here-online", "online", {"conference_url": "https://meet.jit.si/x",
                                                                   "latitude": None, "longitude": None,
                                                                   "postcode": None}),
                                        ("here-inactive", "inactive", {})):
            service.create_meeting(session, meeting_in=MeetingIn(**meeting(slug=slug, attendance_option=attendance,
                                                                           **extra)))
    out = exported()
    assert "approximate" not in out["no-say"] and out["no-say"]["attendance_option"] == "online"
    assert tsml_ui_sees([out["no-say"]], timezone="America/Chicago")["no-say"]["in_person"] is False
    assert [out[s]["approximate"] for s in ("here-in-person", "here-online", "here-inactive")] == ["no", "yes", "yes"]


def test_a_rejected_row_is_in_the_report_and_keeps_what_was_stored():
    rows = load("atlanta")
    import_body(rows, "atlanta")
    broken = [dict(r) for r in rows]
    broken[2]["time"] = "half past seven"
    report = import_body(broken, "atlanta")
    assert [(r["row"], r["slug"]) for r in report["rejected"]] == [(3, rows[2]["slug"])]
    assert "not a time of day" in report["rejected"][0]["reason"]
    assert (report["withdrawn"], report["kept_as_they_were"], report["unchanged"]) == (0, 1, 5)
    assert set(exported()) == {r["slug"] for r in rows}  # still listed, as it was


# --- a timezone that contradicts where the meetings are --------------------------------------------------------

def test_rows_whose_coordinates_are_in_another_timezone_are_refused_and_the_report_says_which():
    rows = load("sussexaa")
    report = import_body(rows, "sussex", timezone="Europe/London")
    assert (report["created"], len(report["rejected"])) == (0, 123)
    assert report["timezone_mismatch"] == {"America/New_York": 123}
    assert "in timezone America/New_York, but its times would be read as Europe/London" in \
        report["rejected"][0]["reason"]
    # A row that says its own timezone is read in that one; one point off the coast is in no country's zone.
    ok = [{**rows[0], "timezone": "America/New_York"}, {**rows[1], "latitude": 50.0, "longitude": -30.0}]
    again = import_body(ok, "sussex", timezone="Europe/London")
    assert (again["created"], again["rejected"]) == (2, [])
    # Same clock under another name (Detroit keeps New York's) is no contradiction.
    assert feeds.check_timezone(timezone="America/Detroit", latitude=38.7, longitude=-75.1) is None
    assert feeds.check_timezone(timezone="America/Denver", latitude=33.45, longitude=-112.07) == "America/Phoenix"


def test_the_timezone_mismatch_shows_in_the_cli_and_on_the_admin_page(tmp_path):
    from typer.testing import CliRunner

    from services.directory.cli import app as cli
    from tests.services.directory.test_admin_pages import browser, post, text_of

    path = tmp_path / "sussex.json"
    path.write_text(json.dumps(load("sussexaa")[:3]))
    result = CliRunner().invoke(cli, ["import", str(path), "--source", "sussex"])
    assert result.exit_code == 0, result.output
    assert "3 rows lie in timezone America/New_York, not Europe/London: refused" in result.output
    assert "--timezone America/New_York" in result.output

    admin = browser("admin")
    added = post(admin, "/admin/feeds", "/admin/feeds", {"id": "sussex-page", "fellowship": "aa",
                                                          "timezone": "Europe/London"})
    assert added.status_code == 303
    uploaded = post(admin, "/admin/feeds/sussex-page", "/admin/feeds/sussex-page/import", {},
                    files={"feed": ("sussex.json", path.read_text(), "application/json")})
    page = text_of(admin.get(uploaded.headers["location"]).text)
    assert "Meetings in another timezone" in page
    assert "3 rows lie in timezone America/New_York, not Europe/London" in page


# --- bad input ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "status"), [
    (bytes(range(256)) * 19_500, 422),                      # 5 MB of bytes that are no text at all
    (b"[" * 4_990_000, 422),                                # JSON nested deeper than any parser goes
    (b"[" + b"9" * 4_990_000 + b"]", 422),                  # a number of five million digits
    (b'[{"slug": "a", "name": "' + b"x" * 4_990_000, 422),  # cut off
    (b"[" + b"{}," * 2_000_000 + b"{}]", 413),              # 6 MB: more than any API request may send
])
def test_five_megabytes_of_garbage_is_a_clear_4xx_and_changes_nothing(body, status):
    import_body(load("atlanta"), "atlanta")
    response = client.post("/feeds/import?source=atlanta&timezone=America/New_York", content=body,
                           headers={**ADMIN, "Content-Type": "application/json"})
    assert response.status_code == status, response.text[:300]
    assert response.json()["detail"]
    assert len(exported()) == 6


def test_bad_rows_are_rejected_one_by_one_with_their_reasons():
    rows = [
        {"slug": "long-name", "name": "x" * 10_000, "day": 1, "time": "19:00"},
        {"slug": "🙂-meeting", "name": "Emoji slug", "day": 1, "time": "19:00"},
        {"slug": "day-nine", "name": "Day nine", "day": 9, "time": "19:00"},
        {"slug": "s" * 10_000, "name": "Long slug", "day": 1, "time": "19:00"},
        {"slug": "nan", "name": "Not a number", "day": 1, "time": "19:00", "latitude": "NaN", "longitude": 1},
        {"slug": "deep", "name": "Deep", "day": 1, "time": "19:00", "types": [[["O"]]], "notes": {"a": 1},
         "regions": [{"x": 1}, "Chicago"], "updated": "yesterday", "email": "not an email",
         "contact_1_email": "nobody", "feedback_url": "javascript:alert(1)", "end_time": "25:00"},
        {"slug": "fine", "name": "Fine", "day": 2, "time": "19:00"},
    ]
    response = client.post("/feeds/import?source=bad", json=rows, headers=ADMIN)
    assert response.status_code == 200
    report = response.json()
    assert [(r["row"], r["slug"][:20]) for r in report["rejected"]] == [
        (1, "long-name"), (2, "🙂-meeting"), (3, "day-nine"), (4, "s" * 20), (5, "nan")]
    reasons = [r["reason"] for r in report["rejected"]]
    assert "name" in reasons[0] and "300" in reasons[0]
    assert reasons[1].startswith("slug") and "out of range 0-6" in reasons[2] and "not a number" in reasons[4]
    assert report["created"] == 2
    left_out = " | ".join(r["reason"] for r in report["left_out"] if r["slug"] == "deep")
    for what in ("notes", "updated", "email", "contact_1_email", "feedback_url", "end_time"):
        assert what in left_out, what
    assert "'not an email'" in left_out and "nobody" not in left_out  # a contact's value is not repeated
    deep = exported()["deep"]
    assert deep["regions"] == ["Chicago"] and "notes" not in deep and "end_time" not in deep


# --- the demo data ----------------------------------------------------------------------------------------------

def test_the_demo_meetings_are_listed_by_tsml_ui_as_what_they_are():
    from services.directory.seed import PILOT_SITES, seed_demo

    seed_demo()
    out = exported()
    assert len(out) == 6 * len(PILOT_SITES)
    shown = tsml_ui_sees(list(out.values()), timezone="Europe/London")
    assert set(shown) == set(out)  # none dropped for want of an address
    online = {slug: row for slug, row in out.items() if row["attendance_option"] == "online"}
    assert len(online) == len(PILOT_SITES) == 9
    for slug, row in online.items():
        # What the spec asks of an online meeting: its link, and only the area it belongs to.
        assert row["conference_url"].startswith("https://meet.jit.si/") and row["approximate"] == "yes"
        assert not {"address", "location", "latitude", "longitude", "postal_code"} & set(row), slug
        assert row["formatted_address"].endswith(", UK") and row["region"] and row["sub_region"]
        assert (shown[slug]["online"], shown[slug]["in_person"], shown[slug]["active"]) == (True, False, True)
    for slug, row in out.items():
        if slug in online:
            continue
        for field in ("location", "address", "city", "postal_code", "country", "region", "latitude"):
            assert row.get(field), (slug, field)
        assert row["approximate"] == "no" and shown[slug]["in_person"] and shown[slug]["map"]
        assert shown[slug]["online"] == (row["attendance_option"] == "hybrid")
    regions = {tuple(m["regions"]) for m in shown.values()}
    assert ("North West", "Kendal") in regions and ("London", "Croydon") in regions


def test_an_admin_sets_the_feed_fields_through_the_api_and_the_feed_says_them():
    body = meeting(slug="croydon-aa", regions=["London", "Croydon"], entity="Croydon Intergroup",
                   entity_url="https://croydon-aa.example.org", contact_1_name="Sam", contact_1_phone="020 7946 0000")
    created = client.post("/meetings", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["regions"] == ["London", "Croydon"] and created.json()["contact_1_name"] == "Sam"
    patched = client.patch("/meetings/croydon-aa", json={"regions": ["London", "Croydon", "Centre"]}, headers=ADMIN)
    assert patched.status_code == 200 and patched.json()["entity"] == "Croydon Intergroup"
    row = exported()["croydon-aa"]
    assert (row["regions"], row["entity_url"], row["contact_1_phone"]) == (
        ["London", "Croydon", "Centre"], "https://croydon-aa.example.org", "020 7946 0000")
    assert client.patch("/meetings/croydon-aa", json={"regions": ["x" * 121]}, headers=ADMIN).status_code == 422
    assert client.patch("/meetings/croydon-aa", json={"contact_1_email": "nobody"}, headers=ADMIN).status_code == 422

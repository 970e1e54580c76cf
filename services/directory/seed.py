"""Demo data for the local run: the sites of the evaluated English pilot, a few meetings each.

Venues and times are illustrative, not a live meeting list.
"""

from __future__ import annotations

from sqlalchemy import select

from services.directory import service
from services.directory.models import Meeting, Site
from services.directory.runtime import runtime
from services.directory.schemas import MeetingIn

# id, host agency, region, postcode (outward code centre), lat, lng
PILOT_SITES = [
    ("birmingham", "Birmingham", "Change Grow Live Birmingham", "West Midlands", "B1", 52.47872, -1.90723),
    ("solihull", "Solihull", "Solihull Integrated Addiction Services", "West Midlands", "B91", 52.41382, -1.78238),
    ("sheffield", "Sheffield", "Sheffield Alcohol Support Service", "Yorkshire and the Humber", "S1", 53.3802, -1.46777),
    ("norwich", "Norwich", "Change Grow Live Norfolk", "East of England", "NR1", 52.62671, 1.31012),
    ("croydon", "Croydon", "Croydon Recovery Network", "London", "CR0", 51.37223, -0.07463),
    ("gateshead", "Gateshead", "Gateshead Evolve", "North East", "NE8", 54.95552, -1.60333),
    ("kendal", "Kendal", "Unity Cumbria (Kendal)", "North West", "LA9", 54.32563, -2.74273),
    ("carlisle", "Carlisle", "Unity Cumbria (Carlisle)", "North West", "CA1", 54.88535, -2.91046),
    ("workington", "Workington", "Unity Cumbria (Workington)", "North West", "CA14", 54.63454, -3.53704),
]

# Each town's streets for the demo venues, in MEETING_PATTERNS' venue order (illustrative, like the venues).
VENUE_STREETS = {
    "birmingham": ("40 Bull Street", "Bull Ring", "Digbeth High Street", "Corporation Street", "Centenary Square"),
    "solihull": ("Warwick Road", "Church Hill Road", "Homer Road", "Blossomfield Road", "Homer Road"),
    "sheffield": ("10 St James' Row", "Norfolk Row", "Campo Lane", "Norfolk Street", "Surrey Street"),
    "norwich": ("Upper Goat Lane", "Coslany Street", "Bank Plain", "Calvert Street", "Millennium Plain"),
    "croydon": ("60 Park Lane", "Church Street", "Wellesley Road", "North End", "Katharine Street"),
    "gateshead": ("West Street", "Bensham Road", "High Street", "Durham Road", "Prince Consort Road"),
    "kendal": ("Stramongate", "Kirkland", "Stricklandgate", "Stricklandgate", "Stricklandgate"),
    "carlisle": ("Fisher Street", "Botchergate", "Lowther Street", "Fisher Street", "Globe Lane"),
    "workington": ("Oxford Street", "Washington Street", "Finkle Street", "Oxford Street", "Vulcans Lane"),
}
COUNTRY = "UK"
# Online meetings in Jitsi rooms: a conference link TSML UI recognises, and no account needed.
CONFERENCE = "https://meet.jit.si/FAMA-demo-{slug}"

# fellowship, name pattern, day, time, end, types, attendance, venue, lat/lng offset
MEETING_PATTERNS = [
    ("aa", "{town} Monday Big Book", 1, "19:30", "21:00", ["O", "B"], "in_person", "Friends Meeting House", (0.004, 0.003)),
    ("na", "{town} Just for Today", 3, "19:00", "20:30", ["C", "LIT"], "in_person", "St Mary's Church Hall", (-0.006, 0.002)),
    ("smart", "SMART Recovery {town}", 2, "14:00", "15:30", ["O"], "in_person", "Community Recovery Hub", (0.002, -0.005)),
    ("ca", "{town} CA Thursday", 4, "20:00", "21:00", ["O", "D"], "hybrid", "Methodist Central Hall", (-0.003, -0.004)),
    ("al-anon", "{town} Al-Anon Family Group", 6, "10:30", "11:30", ["O"], "in_person", "Library Meeting Room", (0.008, 0.006)),
    ("smart-family-friends", "SMART Family & Friends {town} (online)", 0, "18:00", "19:00", ["O"], "online", None, None),
]


def demo_meeting(*, site_id: str, town: str, region: str, postcode: str, lat: float, lng: float, pattern: tuple,
                 street: str | None) -> MeetingIn:
    """One demo meeting, with what the Meeting Guide spec asks of its kind: a venue's full address for one met in
    person; for one online only, its conference link and only the area it belongs to (no venue, no street)."""
    fellowship, name, day, time, end, types, attendance, venue, offset = pattern
    slug = f"{site_id}-{fellowship}-{day}"
    online = attendance != "in_person"
    return MeetingIn(
        slug=slug, name=name.format(town=town), fellowship=fellowship, day=day, time=time, end_time=end, types=types,
        attendance_option=attendance, site_id=site_id, location=venue,
        address=street if venue else None, city=town if venue else None, postal_code=postcode if venue else None,
        country=COUNTRY, region=region, sub_region=town,
        formatted_address=f"{street}, {town} {postcode}, {COUNTRY}" if venue else f"{town}, {COUNTRY}",
        postcode=postcode if venue else None,
        latitude=round(lat + offset[0], 5) if offset else None,
        longitude=round(lng + offset[1], 5) if offset else None,
        conference_url=CONFERENCE.format(slug=slug) if online else None,
        conference_url_notes="Passcode given by the facilitator" if online else None,
    )


def seed_demo() -> dict[str, int]:
    created = {"sites": 0, "meetings": 0}
    with runtime.transaction() as session:
        for site_id, town, agency, region, postcode, _lat, _lng in PILOT_SITES:
            if session.get(Site, site_id) is None:
                session.add(Site(id=site_id, name=town, host_agency=agency, region=region, postcode=postcode,
                                 champion_name=f"{town} FAMA champion", active=True))
                created["sites"] += 1
        for site_id, town, _agency, region, postcode, lat, lng in PILOT_SITES:
            venues = iter(VENUE_STREETS[site_id])
            for pattern in MEETING_PATTERNS:
                street = next(venues) if pattern[7] else None
                meeting_in = demo_meeting(site_id=site_id, town=town, region=region, postcode=postcode, lat=lat,
                                          lng=lng, pattern=pattern, street=street)
                if session.scalar(select(Meeting.id).where(Meeting.slug == meeting_in.slug)) is not None:
                    continue
                service.create_meeting(session, meeting_in=meeting_in)
                created["meetings"] += 1
    return created

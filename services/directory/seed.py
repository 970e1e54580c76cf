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

# fellowship, name pattern, day, time, end, types, attendance, venue, lat/lng offset
MEETING_PATTERNS = [
    ("aa", "{town} Monday Big Book", 1, "19:30", "21:00", ["O", "B"], "in_person", "Friends Meeting House", (0.004, 0.003)),
    ("na", "{town} Just for Today", 3, "19:00", "20:30", ["C", "LIT"], "in_person", "St Mary's Church Hall", (-0.006, 0.002)),
    ("smart", "SMART Recovery {town}", 2, "14:00", "15:30", ["O"], "in_person", "Community Recovery Hub", (0.002, -0.005)),
    ("ca", "{town} CA Thursday", 4, "20:00", "21:00", ["O", "D"], "hybrid", "Methodist Central Hall", (-0.003, -0.004)),
    ("al-anon", "{town} Al-Anon Family Group", 6, "10:30", "11:30", ["O"], "in_person", "Library Meeting Room", (0.008, 0.006)),
    ("smart-family-friends", "SMART Family & Friends {town} (online)", 0, "18:00", "19:00", ["O"], "online", None, None),
]


def seed_demo() -> dict[str, int]:
    created = {"sites": 0, "meetings": 0}
    with runtime.transaction() as session:
        for site_id, town, agency, region, postcode, _lat, _lng in PILOT_SITES:
            if session.get(Site, site_id) is None:
                session.add(Site(id=site_id, name=town, host_agency=agency, region=region, postcode=postcode,
                                 champion_name=f"{town} FAMA champion", active=True))
                created["sites"] += 1
        for site_id, town, _agency, _region, postcode, lat, lng in PILOT_SITES:
            for fellowship, pattern, day, time, end, types, attendance, venue, offset in MEETING_PATTERNS:
                slug = f"{site_id}-{fellowship}-{day}"
                if session.scalar(select(Meeting.id).where(Meeting.slug == slug)) is not None:
                    continue
                meeting_in = MeetingIn(
                    slug=slug, name=pattern.format(town=town), fellowship=fellowship, day=day, time=time,
                    end_time=end, types=types, attendance_option=attendance, site_id=site_id,
                    location=venue, formatted_address=f"{venue}, {town}, {postcode}" if venue else None,
                    postcode=postcode if venue else None,
                    latitude=round(lat + offset[0], 5) if offset else None,
                    longitude=round(lng + offset[1], 5) if offset else None,
                    conference_url=f"https://meet.example.org/fama-{slug}" if attendance != "in_person" else None,
                    conference_url_notes="Passcode given by the facilitator" if attendance != "in_person" else None,
                )
                service.create_meeting(session, meeting_in=meeting_in)
                created["meetings"] += 1
    return created

"""Where a UK postcode or place is: a pluggable geocoder, the offline outward-code table, places by name.

Any object with ``locate(postcode) -> (lat, lng) | None`` serves (a postcodes.io client,
say). Offline, ``OutcodeGeocoder`` resolves full postcodes by their outward code (the
district centre, within a few km), which is what a "near" search needs. A deployment that
loads the ONS Postcode Directory (``read_onspd``, into the postcodes table) places full
postcodes exactly. Towns, villages and cities come from GeoNames (``Places``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import NamedTuple, Protocol

from services.directory.reference import DATA

# Outward code (district) + optional inward code; case and spaces are forgiven.
POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)\s*([0-9][A-Z]{2})?$")


class Geocoder(Protocol):
    def locate(self, postcode: str) -> tuple[float, float] | None:
        """Latitude and longitude of a UK postcode, or None when it is not known."""


def normalise_postcode(value: str) -> str | None:
    """'cr0 1ab' -> 'CR0 1AB', 'b1' -> 'B1'; None when it is not shaped like a UK postcode."""
    match = POSTCODE.match(value.strip().upper())
    if not match:
        return None
    outward, inward = match.groups()
    return f"{outward} {inward}" if inward else outward


def outward_code(postcode: str) -> str | None:
    normal = normalise_postcode(postcode)
    return None if normal is None else normal.split(" ")[0]


class OutcodeGeocoder:
    """Resolves a postcode to the centre of its outward code from uk-outcodes.csv."""

    def __init__(self, table: dict[str, tuple[float, float]]):
        self.table = table

    @classmethod
    def from_csv(cls, path=DATA / "uk-outcodes.csv") -> OutcodeGeocoder:
        with open(path, newline="", encoding="utf-8") as fh:
            return cls({row["outcode"].upper(): (float(row["latitude"]), float(row["longitude"]))
                        for row in csv.DictReader(fh)})

    def locate(self, postcode: str) -> tuple[float, float] | None:
        outward = outward_code(postcode)
        return None if outward is None else self.table.get(outward)


@lru_cache(maxsize=1)
def default_geocoder() -> Geocoder:
    return OutcodeGeocoder.from_csv()


# --- places: towns, villages and cities ------------------------------------------------------

class Place(NamedTuple):
    name: str
    county: str  # the GeoNames second-level area (a county or unitary authority); "" when none
    country: str  # England, Scotland, Wales, Northern Ireland
    latitude: float
    longitude: float
    population: int

    @property
    def area(self) -> str:
        return self.county or self.country


def place_key(value: str) -> str:
    """How a place name is compared: 'St. Ives' = 'saint ives', 'Barrow-in-Furness' = 'barrow in furness'."""
    words = re.sub(r"[^\w]+", " ", value.casefold().replace("&", " and ")).split()
    return " ".join("saint" if w == "st" else w for w in words)


class Places:
    """UK towns, villages and cities by name, from the GeoNames extract in data/gb-places.csv.

    ``find`` answers every place of that name, biggest first; "Newport, Isle of Wight" (a name,
    a comma and its county or country) picks one. ``label`` words a place so that places of
    the same name can be told apart.
    """

    def __init__(self, places: list[Place]):
        self.by_key: dict[str, list[Place]] = {}
        for place in sorted(places, key=lambda p: -p.population):
            self.by_key.setdefault(place_key(place.name), []).append(place)

    @classmethod
    def from_csv(cls, path=DATA / "gb-places.csv") -> Places:
        with open(path, newline="", encoding="utf-8") as fh:
            return cls([Place(row["name"], row["county"], row["country"], float(row["latitude"]),
                              float(row["longitude"]), int(row["population"] or 0)) for row in csv.DictReader(fh)])

    def find(self, text: str) -> list[Place]:
        found = self.by_key.get(place_key(text))
        if found is not None:
            return found
        name, _, area = text.partition(",")
        area, namesakes = place_key(area), self.by_key.get(place_key(name), [])
        if not area:
            return []
        # A label ("Newport, Wales": no county; "Newtown, Powys, Wales") names one place: the biggest
        # of any it cannot tell apart. Otherwise every namesake in that county or country.
        labelled = [p for p in namesakes if area in (place_key(p.area), place_key(f"{p.county} {p.country}"))]
        return labelled[:1] or [p for p in namesakes if area in (place_key(p.county), place_key(p.country))]

    def label(self, place: Place) -> str:
        """'Kendal'; 'Newport, Isle of Wight' when other places share the name."""
        namesakes = self.by_key.get(place_key(place.name), [])
        if len(namesakes) < 2:
            return place.name
        areas = [p.area for p in namesakes]
        return f"{place.name}, {place.area if areas.count(place.area) == 1 else f'{place.county}, {place.country}'}"


@lru_cache(maxsize=1)
def default_places() -> Places:
    return Places.from_csv()


# --- the ONS Postcode Directory ----------------------------------------------------------------

class PostcodeFileError(ValueError):
    """The file is not in the ONS Postcode Directory's CSV format."""


def read_onspd(lines: Iterable[str]) -> Iterator[dict]:
    """Live postcodes with a location from an ONS Postcode Directory CSV: {"postcode", "latitude", "longitude"}.

    The published file (ONSPD, Open Government Licence) has a row per postcode ever issued, with
    ``pcds`` (or ``pcd``), ``doterm`` (the month it was terminated, empty while it is live) and
    ``lat``/``long`` (99.999999 where it has no grid reference). Terminated and unplaced postcodes
    are left out: to a search they do not exist.
    """
    reader = csv.DictReader(lines)
    columns = {c.strip().lower(): c for c in reader.fieldnames or []}
    code_column = columns.get("pcds") or columns.get("pcd")
    missing = [name for name in ("lat", "long", "doterm") if name not in columns]
    if code_column is None or missing:
        raise PostcodeFileError("not an ONS Postcode Directory CSV: it needs the columns pcds (or pcd), "
                                f"doterm, lat and long; missing {', '.join(missing or ['pcds'])}")
    for row in reader:
        if (row[columns["doterm"]] or "").strip():
            continue
        postcode = normalise_postcode(row[code_column] or "")
        try:
            lat, lng = float(row[columns["lat"]]), float(row[columns["long"]])
        except (TypeError, ValueError):
            continue
        if postcode is None or " " not in postcode or not -90 <= lat <= 90:
            continue
        yield {"postcode": postcode, "latitude": lat, "longitude": lng}

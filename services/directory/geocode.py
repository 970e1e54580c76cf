"""Where a UK postcode is: a pluggable geocoder, and the offline outward-code table.

Any object with ``locate(postcode) -> (lat, lng) | None`` serves (a postcodes.io client,
say). Offline, ``OutcodeGeocoder`` resolves full postcodes by their outward code (the
district centre, within a few km), which is what a "near" search needs.
"""

from __future__ import annotations

import csv
import re
from functools import lru_cache
from typing import Protocol

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

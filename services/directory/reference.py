"""Reference data shipped with the directory: Meeting Guide type codes and fellowships."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).parent / "data"

# The 87 reserved Meeting Guide type codes (code4recovery/spec data/types.json) -> English name.
TYPE_NAMES: dict[str, str] = {
    code: names["en"] for code, names in json.loads((DATA / "meeting-guide-types.json").read_text("utf-8")).items()
}

FELLOWSHIPS: dict[str, str] = {
    "aa": "Alcoholics Anonymous",
    "na": "Narcotics Anonymous",
    "ca": "Cocaine Anonymous",
    "smart": "SMART Recovery",
    "al-anon": "Al-Anon Family Groups",
    "alateen": "Alateen",
    "fa": "Families Anonymous",
    "smart-family-friends": "SMART Recovery Family & Friends",
    "ga": "Gamblers Anonymous",
    "ma": "Marijuana Anonymous",
    "cma": "Crystal Meth Anonymous",
    "other": "Other mutual aid",
}

"""Reference data shipped with the directory: Meeting Guide type codes and fellowships."""

from __future__ import annotations

import json
from pathlib import Path

from shared.events import FELLOWSHIP_NAMES

DATA = Path(__file__).parent / "data"

# The 87 reserved Meeting Guide type codes (code4recovery/spec data/types.json) -> English name.
TYPE_NAMES: dict[str, str] = {
    code: names["en"] for code, names in json.loads((DATA / "meeting-guide-types.json").read_text("utf-8")).items()
}

FELLOWSHIPS = FELLOWSHIP_NAMES  # the contract's names (shared/events.py)

"""Input types that accept only what the API documents.

Pydantic's lax mode would take ``0`` as 1 January 1970 or as ``false``; an API that
documents "YYYY-MM-DD" or a JSON boolean should refuse anything else with a 422.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import BeforeValidator, Strict

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _iso_date(value):
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not DATE_RE.match(value):
        raise ValueError("must be a date written YYYY-MM-DD")
    return value


def _iso_datetime(value):
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not DATETIME_RE.match(value):
        raise ValueError("must be a date and time in ISO 8601, e.g. 2026-11-24T14:00:00Z")
    return value


InputDate = Annotated[dt.date, BeforeValidator(_iso_date)]
InputDateTime = Annotated[dt.datetime, BeforeValidator(_iso_datetime)]
InputBool = Annotated[bool, Strict()]
InputFloat = Annotated[float, Strict()]  # ints are fine, booleans are not
InputInt = Annotated[int, Strict()]  # booleans are not numbers

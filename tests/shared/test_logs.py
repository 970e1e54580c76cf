"""The log scrubber masks contact details however they are written (the review's misses)."""

import pytest
import structlog

from shared.logs import scrub_text

NUMBERS = [
    "07812 345678", "07812345678", "+447812345678", "+44 7812 345678", "0044 7812 345678",
    "+44 (0)7812 345678", "+44(0)7812345678", "%2B447812345678", "%2b44 7812 345678", "7812345678",
    "07812-345-678",
]
EMAILS = ["eleanor@example.org", "eleanor%40example.org", "first.last+fama@mail.example.co.uk"]


@pytest.mark.parametrize("number", NUMBERS)
def test_every_way_of_writing_a_uk_number_is_masked(number):
    for line in (number, f"to={number}&x=1", f"GET /search?mobile={number} HTTP/1.1", f"call {number} today"):
        scrubbed = scrub_text(line)
        assert "345678" not in scrubbed and "345-678" not in scrubbed, scrubbed
        assert "[phone]" in scrubbed


@pytest.mark.parametrize("email", EMAILS)
def test_emails_are_masked_also_url_encoded(email):
    scrubbed = scrub_text(f"/unsubscribe?e={email}")
    assert "eleanor" not in scrubbed and "first.last" not in scrubbed
    assert "[email]" in scrubbed


@pytest.mark.parametrize("harmless", [
    "event_id=0c6a1f4e-7812-4345-8678-1234567890ab", "took 1764672000 ms", "port 8001", "2026-12-02T13:15:24Z",
    "postcode CR0 1AA", "reminders=12345",
])
def test_ids_times_and_counts_are_left_alone(harmless):
    assert scrub_text(harmless) == harmless


def test_uvicorn_no_access_log_stays_off_and_other_uvicorn_logs_are_json(monkeypatch):
    """`uvicorn --no-access-log` empties and detaches uvicorn.access before the app is imported;
    FAMA's logging set-up must not attach it again (it did: every request was logged anyway)."""
    import logging

    import shared.logs

    access, error = logging.getLogger("uvicorn.access"), logging.getLogger("uvicorn.error")
    for logger in (access, error):
        monkeypatch.setattr(logger, "handlers", [])
        monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logging.getLogger(), "handlers", list(logging.getLogger().handlers))
    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)
    monkeypatch.setattr(shared.logs, "_configured", False)
    before = structlog.get_config()
    try:
        shared.logs.configure_logging("INFO")
        assert not access.hasHandlers()  # uvicorn checks exactly this before writing an access line
        assert error.propagate and error.hasHandlers()  # errors still go out as JSON lines
    finally:  # the rest of the run keeps its own logging (structlog.testing.capture_logs needs it uncached)
        structlog.configure(**before)

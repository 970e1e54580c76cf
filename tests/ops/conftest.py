import pytest

from shared.metrics import Cached


@pytest.fixture(autouse=True)
def fresh_figures(monkeypatch):
    """Each scrape in these tests reads the state it just made (production caches figures for 2 s,
    so one test's scrape could otherwise answer the next test's first question)."""
    monkeypatch.setattr(Cached, "MAX_AGE_SECONDS", 0.0)

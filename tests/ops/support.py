"""Reading /metrics as Prometheus would, for the ops tests."""

from __future__ import annotations

import importlib

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families


def scrape(service: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of ``service``'s /metrics: (sample name, its labels) -> value."""
    app = importlib.import_module(f"services.{service}.api").app
    response = TestClient(app).get("/metrics")
    assert response.status_code == 200, response.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(service: str, name: str, **labels) -> float:
    """One sample's value now (0 when the sample is absent)."""
    return scrape(service).get((name, frozenset(labels.items())), 0.0)


def metric_names(service: str) -> set[str]:
    """The family names ``service``'s /metrics declares (# TYPE lines), with the sample names
    PromQL uses for them (``_total``, ``_bucket``, ``_sum``, ``_count``)."""
    app = importlib.import_module(f"services.{service}.api").app
    names = set()
    for family in text_string_to_metric_families(TestClient(app).get("/metrics").text):
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ())
        names.update(family.name + suffix for suffix in suffixes)
    return names

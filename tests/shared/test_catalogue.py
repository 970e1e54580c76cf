"""The event catalogue and the services agree: every subscriber handles every event it is sent
(a missing handler would drop events silently), and nobody handles an event it is never sent."""

import importlib

import pytest

from shared.events import CATALOGUE
from shared.queues import SERVICES


@pytest.mark.parametrize("service", SERVICES)
def test_every_subscribed_event_has_a_handler_and_every_handler_a_subscription(service):
    handlers = importlib.import_module(f"services.{service}.handlers").HANDLERS
    subscribed = {name for name, spec in CATALOGUE.items() if service in spec.subscribers}
    assert subscribed - set(handlers) == set(), f"{service} is sent events it has no handler for"
    assert set(handlers) - subscribed == set(), f"{service} handles events the catalogue never sends it"


def test_every_event_has_a_producer_that_does_not_subscribe_to_it():
    for name, spec in CATALOGUE.items():
        assert spec.producer in SERVICES, name
        assert spec.producer not in spec.subscribers, f"{name}: a service never sends itself events"
        assert spec.subscribers, f"{name} reaches nobody"

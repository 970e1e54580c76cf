"""Every Celery queue and cross-service task name, in one place.

Each service consumes events on its own queue so ops can scale its workers alone.
Event tasks are addressed by name (``send_task``) so no service imports another.
"""

SERVICES = ("directory", "referrals", "notifications")


def events_queue(service: str) -> str:
    return f"{service}.events"


def event_task(service: str) -> str:
    return f"{service}.handle_event"


def events_batch_task(service: str) -> str:
    """Several events in one message (the outbox relays a subscriber's events in batches)."""
    return f"{service}.handle_events"


REFERRALS_EVENTS = events_queue("referrals")
NOTIFICATIONS_EVENTS = events_queue("notifications")
# Immediate sends of due reminders: their own queue so send workers scale separately.
NOTIFICATIONS_SEND = "notifications.send"

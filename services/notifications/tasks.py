"""Celery entrypoint of the notifications workers.

Events: ``celery -A services.notifications.tasks worker -Q notifications.events``
Sends:  ``celery -A services.notifications.tasks worker -Q notifications.send``
"""

import uuid

from services.notifications import sending
from services.notifications.handlers import HANDLERS
from services.notifications.runtime import runtime
from shared.runtime import RETRYABLE

celery = runtime.celery
handle_event = runtime.register_event_task(HANDLERS)


@celery.task(name=sending.SEND_TASK, bind=True, acks_late=True, max_retries=None, autoretry_for=RETRYABLE,
             retry_backoff=2, retry_backoff_max=60, retry_jitter=True)
def send_reminders(task, reminder_ids: list[str]) -> list[str]:
    """Send each reminder at most once (args: their ids; each row's status guards it). One
    that fails for now is retried alone, later; an error with one does not hold up the others
    and is raised afterwards (a database or broker error first: the task is retried, and the
    guards skip what was already sent)."""
    outcomes, errors = [], []
    for reminder_id in reminder_ids:
        try:
            try:
                outcomes.append(sending.send_reminder(reminder_id=uuid.UUID(reminder_id)))
            except sending.RetryLater as exc:
                sending.publish_sends([uuid.UUID(reminder_id)], countdown=exc.countdown)
                outcomes.append(f"retry in {exc.countdown:.0f} s")
        except Exception as exc:  # noqa: BLE001 (raised below, once the rest of the chunk is done)
            errors.append(exc)
    if errors:
        raise next((e for e in errors if isinstance(e, RETRYABLE)), errors[0])
    return outcomes

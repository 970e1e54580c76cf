"""Celery entrypoint of the notifications workers.

Events: ``celery -A services.notifications.tasks worker -Q notifications.events``
Sends:  ``celery -A services.notifications.tasks worker -Q notifications.send``
"""

import uuid

from sqlalchemy.exc import OperationalError

from services.notifications import sending
from services.notifications.handlers import HANDLERS
from services.notifications.runtime import runtime
from shared import queues

celery = runtime.celery
handle_event = runtime.register_event_task(HANDLERS)


@celery.task(name=sending.SEND_TASK, bind=True, acks_late=True, max_retries=None,
             autoretry_for=(OperationalError, ConnectionError), retry_backoff=2, retry_backoff_max=60, retry_jitter=True)
def send_reminder(task, reminder_id: str) -> str:
    """Send one reminder; the row's status guards against duplicates (args: its id only)."""
    try:
        return sending.send_reminder(reminder_id=uuid.UUID(reminder_id))
    except sending.RetryLater as exc:
        raise task.retry(countdown=exc.countdown, max_retries=None, queue=queues.NOTIFICATIONS_SEND) from exc


@celery.task(name="notifications.noop", acks_late=True)
def noop() -> None:
    """Does nothing: the baseline the dispatch benchmark compares the send path with."""

"""Celery entrypoint of the notifications worker: ``celery -A services.notifications.tasks worker``."""

from services.notifications.handlers import HANDLERS
from services.notifications.runtime import runtime

celery = runtime.celery
handle_event = runtime.register_event_task(HANDLERS)

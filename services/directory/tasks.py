"""Celery entrypoint of the directory worker: ``celery -A services.directory.tasks worker``."""

from services.directory.handlers import HANDLERS
from services.directory.runtime import runtime

celery = runtime.celery
handle_event = runtime.register_event_task(HANDLERS)

"""Celery entrypoint of the referrals worker: ``celery -A services.referrals.tasks worker``."""

from services.referrals.handlers import HANDLERS
from services.referrals.runtime import runtime

celery = runtime.celery
handle_event = runtime.register_event_task(HANDLERS)

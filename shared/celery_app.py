"""One Celery app factory with the at-least-once settings every service uses.

Late acks + prefetch 1 + reject on worker lost: a task is removed from Redis only after
it finished, and a worker that dies mid-task gives it back. Results are ignored. Nothing
far in the future is scheduled with ETA/countdown: on Redis such tasks come back after the
visibility timeout and wait in worker memory, so future work (reminders) lives in the database.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import setup_logging

from shared import queues, redis_client
from shared.logs import configure_logging
from shared.settings import ServiceSettings


def make_celery(service: str, settings: ServiceSettings) -> Celery:
    broker_url, sentinel_options = redis_client.broker(settings)
    app = Celery(service, broker=broker_url, set_as_current=False)
    # Unacknowledged tasks of a dead worker come back after the visibility timeout: every
    # worker checks for them every few seconds (kombu's default scans far less often).
    transport = {"visibility_timeout": settings.visibility_timeout, "unacked_restore_interval": 5,
                 "unacked_restore_throttle": 1, **sentinel_options}
    if settings.redis_key_prefix:
        transport["global_keyprefix"] = settings.redis_key_prefix
    app.conf.update(
        task_acks_late=True,
        task_acks_on_failure_or_timeout=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queues.events_queue(service),
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_send_task_events=True,
        task_send_sent_event=False,
        enable_utc=True,
    )
    return app


@setup_logging.connect
def _celery_logging(**_kw):
    configure_logging()

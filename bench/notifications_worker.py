"""The notifications worker the benchmarks start: the production tasks plus a no-op baseline.

``celery -A bench.notifications_worker worker -Q ...`` (from the repository root). The no-op task
lives here, not in services/notifications/tasks.py, so production workers never register it.
"""

from services.notifications.tasks import celery  # the production tasks, registered on import


@celery.task(name="notifications.noop", acks_late=True)
def noop() -> None:
    """Does nothing: the baseline the dispatch benchmark compares the send path with."""

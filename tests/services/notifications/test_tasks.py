"""What the production notifications worker registers: no benchmark-only task."""

from services.notifications import tasks


def test_the_production_worker_has_no_benchmark_noop_task():
    names = {name for name in tasks.celery.tasks if name.startswith("notifications.")}
    assert "notifications.noop" not in names
    assert {"notifications.handle_event", "notifications.send_reminders"} <= names

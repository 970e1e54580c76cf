"""Business metrics of the event backbone, computed when Prometheus scrapes an API.

Workers, senders and schedulers have no /metrics of their own (they are other processes,
other containers, scaled apart), so what they do is read back from where it leaves a
trace: the service's database (outbox rows) and Redis (queues, and two small hashes the
workers keep: refused events and inbox processing lag). Every API replica therefore
reports the same truth, and a worker restart loses no count. A process-local counter
would show only that process's share and vanish with it; prometheus_client's
multiprocess mode needs one shared directory, which separate containers do not have.

Each scrape is a handful of indexed queries (counts capped at ``COUNT_CAP``) and one Redis
pipeline, computed at most once every ``MAX_AGE_SECONDS`` per process however many
Prometheus servers scrape. A source that does not answer is reported as
``fama_metrics_source_up{source=...} 0``; the scrape itself still succeeds.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import redis
import structlog
from kombu.transport.redis import Channel
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from shared.events import CATALOGUE, utcnow
from shared.outbox import CONFIRM_WINDOW

log = structlog.get_logger(__name__)

# A gauge that counts rows stops at this many: past it the figure says "at least".
COUNT_CAP = 100_000
# Upper bounds (seconds) of the inbox lag histogram: from a busy worker to a day-long outage.
# Why a consumer refuses a message (shared.events.refusal): each is shown from 0, so the first
# refusal is an increase Prometheus sees (a series that appears at 1 has no increase).
REFUSAL_REASONS = ("malformed", "unknown_type", "not_subscriber", "wrong_producer", "bad_signature")
LAG_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)


def refused_key(prefix: str, consumer: str) -> str:
    return f"{prefix}fama:metrics:events-refused:{consumer}"


def lag_key(prefix: str, consumer: str) -> str:
    return f"{prefix}fama:metrics:inbox-lag:{consumer}"


def count_refused(client: redis.Redis, *, prefix: str, consumer: str, reason: str) -> None:
    """A worker refused a message as not authentic: count it where every API replica reads it."""
    try:
        client.hincrby(refused_key(prefix, consumer), reason, 1)
    except redis.RedisError as exc:  # the refusal is logged anyway; a count must not fail the task
        log.warning("metrics.count_failed", metric="events_refused", error=type(exc).__name__)


def lag_commands(pipe, *, prefix: str, consumer: str, seconds: float) -> None:
    """Queue on ``pipe`` (a Redis pipeline) the histogram update for an event that entered the
    consumer's inbox ``seconds`` after it occurred; the caller sends it with the event's receipt."""
    bucket = next((str(b) for b in LAG_BUCKETS if seconds <= b), "+Inf")
    key = lag_key(prefix, consumer)
    pipe.hincrby(key, bucket, 1).hincrbyfloat(key, "sum", max(seconds, 0.0))


def queue_keys(prefix: str, queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting messages: kombu keeps one per priority step."""
    return [f"{prefix}{queue}" + (f"{Channel.sep}{step}" if step else "") for step in Channel.priority_steps]


class Cached:
    """A collector whose families are computed at most once every ``max_age`` seconds."""

    MAX_AGE_SECONDS = 2.0

    def __init__(self, compute: Callable[[], list[Metric]]):
        self._compute = compute
        self._lock = threading.Lock()
        self._at = -1e9
        self._families: list[Metric] = []

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not touch the database or Redis

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() - self._at >= self.MAX_AGE_SECONDS:
                self._families = list(self._compute())
                self._at = time.monotonic()
            return list(self._families)


def age_seconds(now: dt.datetime, then: dt.datetime | None) -> float:
    if then is None:
        return 0.0
    if then.tzinfo is None:  # SQLite and a hand-made envelope can give naive UTC times
        then = then.replace(tzinfo=dt.UTC)
    return max((now - then).total_seconds(), 0.0)


def seconds_since(then: dt.datetime) -> float:
    return age_seconds(utcnow(), then)


def capped_counts(session, column, *where, every: Iterable[str] = ()) -> dict[str, int]:
    """Rows matching ``where`` per value of ``column`` (at most ``COUNT_CAP`` rows read), with 0
    for each of ``every`` that has none, so a graph shows a line at 0 rather than no line."""
    rows = select(column.label("key")).where(*where).limit(COUNT_CAP).subquery()
    counts = dict.fromkeys(every, 0)
    counts.update((str(k), n) for k, n in session.execute(select(rows.c.key, func.count()).group_by(rows.c.key)))
    return counts


def backbone_metrics(runtime, *, queues: Sequence[str]) -> Cached:
    """The event backbone as one service sees it: its outbox, its workers' refusals and inbox
    lag, and the Celery queues it consumes (``queues``)."""

    subscribers = sorted({sub for spec in CATALOGUE.values() if spec.producer == runtime.name for sub in spec.subscribers})

    def outbox_families(up: GaugeMetricFamily) -> list[Metric]:
        t = runtime.outbox_table
        now = utcnow()
        waiting = GaugeMetricFamily("fama_outbox_unrelayed", "Outbox rows committed but not yet sent to their "
                                    "subscriber's queue (capped at 100000)", labels=["subscriber"])
        oldest = GaugeMetricFamily("fama_outbox_oldest_unrelayed_age_seconds",
                                   "Age of the oldest outbox row not yet sent (0 when none)")
        unconfirmed = GaugeMetricFamily("fama_outbox_unconfirmed", "Events relayed (or marked so by a process that "
                                        "died before sending) but not yet confirmed by their subscriber (still "
                                        "chased; capped at 100000)", labels=["subscriber"])
        oldest_unconfirmed = GaugeMetricFamily("fama_outbox_oldest_unconfirmed_age_seconds",
                                               "Age of the oldest event sent and not yet confirmed (0 when none)")
        try:
            with runtime.sessions() as session:
                for subscriber, n in capped_counts(session, t.c.subscriber, t.c.relayed_at.is_(None),
                                                   every=subscribers).items():
                    waiting.add_metric([subscriber], n)
                # The unrelayed index is (relayed_at, id): the lowest id is the oldest row.
                first = session.scalar(select(t.c.created_at).where(t.c.relayed_at.is_(None)).order_by(t.c.id).limit(1))
                oldest.add_metric([], age_seconds(now, first))
                chased = (t.c.confirmed_at.is_(None), t.c.relayed_at.is_not(None), t.c.created_at >= now - CONFIRM_WINDOW)
                for subscriber, n in capped_counts(session, t.c.subscriber, *chased, every=subscribers).items():
                    unconfirmed.add_metric([subscriber], n)
                first = session.scalar(select(func.min(t.c.created_at)).where(*chased))
                oldest_unconfirmed.add_metric([], age_seconds(now, first))
        except SQLAlchemyError as exc:
            log.warning("metrics.source_unavailable", source="database", error=type(exc).__name__)
            up.add_metric(["database"], 0)
            return []
        up.add_metric(["database"], 1)
        return [waiting, oldest, unconfirmed, oldest_unconfirmed]

    def redis_families(up: GaugeMetricFamily) -> list[Metric]:
        prefix, name = runtime.settings.redis_key_prefix, runtime.name
        lengths = GaugeMetricFamily("fama_queue_length", "Messages waiting on a Celery queue (Redis lists, every "
                                    "priority)", labels=["queue"])
        unacked = GaugeMetricFamily("fama_queue_unacked", "Messages a worker has taken and not yet acknowledged "
                                    "(every queue of this Redis)")
        refused = CounterMetricFamily("fama_events_refused", "Event messages this service's workers refused as "
                                      "not authentic", labels=["consumer", "reason"])
        lag = HistogramMetricFamily("fama_inbox_lag_seconds", "Time from an event's occurred_at to its processing "
                                    "by this service's workers", labels=["consumer"])
        try:
            pipe = runtime.redis.pipeline(transaction=False)
            for queue in queues:
                for key in queue_keys(prefix, queue):
                    pipe.llen(key)
            pipe.hlen(f"{prefix}unacked")
            pipe.hgetall(refused_key(prefix, name))
            pipe.hgetall(lag_key(prefix, name))
            results = pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics.source_unavailable", source="redis", error=type(exc).__name__)
            up.add_metric(["redis"], 0)
            return []
        up.add_metric(["redis"], 1)
        steps = len(Channel.priority_steps)
        for i, queue in enumerate(queues):
            lengths.add_metric([queue], sum(results[i * steps:(i + 1) * steps]))
        unacked.add_metric([], results[len(queues) * steps])
        counts = dict.fromkeys(REFUSAL_REASONS, 0)
        counts.update((reason.decode(), int(n)) for reason, n in results[-2].items())
        for reason, n in sorted(counts.items()):
            refused.add_metric([name, reason], n)
        stored = {k.decode(): v for k, v in results[-1].items()}
        if stored:
            cumulative, buckets = 0, []
            for bound in (*(str(b) for b in LAG_BUCKETS), "+Inf"):
                cumulative += int(stored.get(bound, 0))
                buckets.append((bound, cumulative))
            lag.add_metric([name], buckets, sum_value=float(stored.get("sum", 0)))
        return [lengths, unacked, refused, lag]

    def compute() -> list[Metric]:
        up = GaugeMetricFamily("fama_metrics_source_up", "Whether /metrics could read this source (1) or not (0)",
                               labels=["source"])
        return [*outbox_families(up), *redis_families(up), up]

    return Cached(compute)

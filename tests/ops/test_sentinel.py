"""Redis Sentinel: the whole of FAMA on a ``sentinel://`` REDIS_URL, through a primary failover.

A real primary, a replica and three ``redis-server --sentinel`` processes are started on free
ports. The stack (APIs, workers, sender, schedulers) is given only the sentinels' addresses.
While a stream of referrals goes through it, the sentinels promote the replica
(``SENTINEL FAILOVER``). Afterwards: every referral answered 201 is stored once, planned once,
its three reminders sent once each, and every event sits in its subscriber's inbox.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from services.directory.runtime import runtime as directory
from services.notifications.runtime import runtime as notifications
from services.referrals.runtime import runtime as referrals
from shared import redis_client
from shared.celery_app import make_celery
from shared.meeting_time import meeting_guide_weekday
from shared.settings import ServiceSettings
from tests.chaos import harness
from tests.chaos.harness import ChaosStack, Stream, TimeMachine
from tests.services.notifications.support import ANY_HOUR
from tests.support.processes import wait_for
from tests.support.stack import free_port

MASTER = "mymaster"
PASSWORD = "sentinel-test-password-0123456789"
REFERRALS = 45


# --- pure parsing -----------------------------------------------------------------------------


def settings_for(url: str, master: str = MASTER) -> ServiceSettings:
    return ServiceSettings(redis_url=url, redis_sentinel_master=master)


def test_a_sentinel_url_names_every_sentinel_and_the_masters_password_and_database():
    url = "sentinel://:p%40ss@h1:26379;sentinel://h2:26380;sentinel://h3/2"
    address = redis_client.parse_sentinel_url(url)
    assert address.sentinels == (("h1", 26379), ("h2", 26380), ("h3", 26379))
    assert address.password == "p@ss" and address.db == 2
    broker_url, options = redis_client.broker(settings_for(url, "cache"))
    assert broker_url == "sentinel://:p%40ss@h1:26379/2;sentinel://:p%40ss@h2:26380/2;sentinel://:p%40ss@h3:26379/2"
    assert options == {"master_name": "cache"}


def test_celery_gets_the_sentinel_transport_and_the_master_name():
    app = make_celery("referrals", settings_for("sentinel://:pw@h1:26379;sentinel://h2:26379/0", "cache"))
    assert app.conf.broker_url.startswith("sentinel://:pw@h1:26379/0;")
    assert app.conf.broker_transport_options["master_name"] == "cache"
    assert app.conf.broker_transport_options["visibility_timeout"] > 0, "the usual options are kept"


def test_a_plain_url_is_used_as_it_is():
    url = "rediss://:pw@cache.example.org:6380/1"
    assert redis_client.broker(settings_for(url)) == (url, {})
    assert "master_name" not in make_celery("directory", settings_for(url)).conf.broker_transport_options


@pytest.mark.parametrize("url", ["sentinel://h1:26379;redis://h2:6379", "sentinel://h1:26379/zero", "sentinel://"])
def test_a_malformed_sentinel_url_is_refused_saying_what_is_wrong(url):
    with pytest.raises(ValueError, match="REDIS_URL|sentinel"):
        redis_client.parse_sentinel_url(url)


# --- a real Sentinel deployment -------------------------------------------------------------------


class SentinelDeployment:
    """A primary, one replica and three sentinels, all private to the test."""

    def __init__(self):
        if shutil.which("redis-server") is None:
            raise AssertionError("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="fama-sentinel-"))
        self.procs: list[subprocess.Popen] = []
        self.primary, self.replica = free_port(), free_port()
        self.sentinels = [free_port() for _ in range(3)]
        for port, replica_of in ((self.primary, None), (self.replica, self.primary)):
            data = self.dir / str(port)
            data.mkdir()
            args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
                    "--appendonly", "yes", "--maxmemory-policy", "noeviction", "--requirepass", PASSWORD,
                    "--masterauth", PASSWORD]
            if replica_of:
                args += ["--replicaof", "127.0.0.1", str(replica_of)]
            self._start(args)
            wait_for(lambda p=port: self._answers(p), timeout=20, what=f"redis on {port}")
        wait_for(lambda: self.client(self.replica).info("replication").get("master_link_status") == "up",
                 timeout=30, what="the replica to sync")
        for port in self.sentinels:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary} 2\n"
                            f"sentinel auth-pass {MASTER} {PASSWORD}\n"
                            f"sentinel down-after-milliseconds {MASTER} 2000\n"
                            f"sentinel failover-timeout {MASTER} 10000\n")
            self._start(["redis-server", str(conf), "--sentinel"])
        wait_for(self._sentinels_see_the_replica, timeout=60, what="the sentinels to find the replica")

    def _start(self, args: list[str]) -> None:
        self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, socket_timeout=3)

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=3, decode_responses=True)

    def _answers(self, port: int) -> bool:
        try:
            return bool(self.client(port).ping())
        except redis.RedisError:
            return False

    def _sentinels_see_the_replica(self) -> bool:
        try:
            return all(any(int(r["port"]) == self.replica and r.get("master-link-status") == "ok"
                           and not {"s_down", "disconnected"} & set(str(r["flags"]).split(","))
                           for r in self.sentinel(s).sentinel_slaves(MASTER)) for s in self.sentinels)
        except redis.RedisError:
            return False

    @property
    def url(self) -> str:
        first, *rest = self.sentinels
        return ";".join([f"sentinel://:{PASSWORD}@127.0.0.1:{first}"] + [f"sentinel://127.0.0.1:{p}" for p in rest]) + "/0"

    def master_port(self) -> int:
        host, port = self.sentinel(self.sentinels[1]).sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def failover(self) -> int:
        """Promote the replica; returns the new primary's port once every sentinel agrees."""
        old = self.master_port()
        wait_for(lambda: self._asked_to_fail_over(), timeout=60, interval=0.5, what="a sentinel to start a failover")

        def promoted():
            ports = set()
            for s in self.sentinels:
                try:
                    ports.add(int(self.sentinel(s).sentinel_get_master_addr_by_name(MASTER)[1]))
                except redis.RedisError:
                    return None
            return len(ports) == 1 and old not in ports and ports.pop()

        new = wait_for(promoted, timeout=60, interval=0.2, what="the sentinels to promote the replica")
        wait_for(lambda: self.client(new).info("replication")["role"] == "master", timeout=30, what="a new primary")
        # The old primary takes writes until the sentinels make it a replica (Redis replicates
        # asynchronously: what it took meanwhile is dropped; FAMA's outbox resends such events).
        wait_for(lambda: self._role(old) == "slave", timeout=60, what="the old primary to become a replica")
        return new

    def _asked_to_fail_over(self) -> bool:
        try:
            return bool(self.sentinel(self.sentinels[0]).execute_command("SENTINEL", "FAILOVER", MASTER))
        except redis.ResponseError as exc:  # NOGOODSLAVE until the sentinel has the replica's fresh INFO
            if "NOGOODSLAVE" in str(exc):
                return False
            raise

    def _role(self, port: int) -> str | None:
        try:
            return self.client(port).info("replication")["role"]
        except redis.RedisError:
            return None

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sentinel_deployment():
    deployment = SentinelDeployment()
    yield deployment
    deployment.stop()


def test_the_apps_redis_client_follows_the_master_through_a_failover(sentinel_deployment, redis_prefix):
    settings = settings_for(sentinel_deployment.url)
    client = redis_client.redis_client(settings, timeout=3)
    key = f"{redis_prefix}sentinel-probe"
    client.set(key, "before")
    assert sentinel_deployment.client(sentinel_deployment.primary).get(key) == b"before"
    new = sentinel_deployment.failover()
    assert new == sentinel_deployment.replica
    wait_for(lambda: _writes(client, key, "after"), timeout=30, what="a write to reach the new primary")
    assert sentinel_deployment.client(new).get(key) == b"after"


def _writes(client: redis.Redis, key: str, value: str) -> bool:
    try:
        return bool(client.set(key, value))
    except redis.RedisError:
        return False


# --- the whole stack through a failover ------------------------------------------------------------


MEETINGS = [{"slug": f"sentinel-{site}-{n}", "name": f"Sentinel test meeting {n}", "fellowship": fellowship,
             "time": "19:00", "end_time": "20:30", "types": ["O"], "attendance_option": "in_person",
             "location": "Community hub", "postcode": "CR0", "latitude": 51.372, "longitude": -0.074, "site_id": site}
            for n, (site, fellowship) in enumerate((("croydon", "smart"), ("sheffield", "aa"), ("birmingham", "na")))]


def meetings_ahead() -> list[dict]:
    """Meetings three days ahead at 19:00 London time: every referral gets all three reminders."""
    day = meeting_guide_weekday(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3))
    return [{**m, "day": day} for m in MEETINGS]


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("clean_state")
def test_nothing_lost_or_doubled_through_a_sentinel_failover(sentinel_deployment, redis_prefix, capsys):
    env = {"REDIS_URL": sentinel_deployment.url, "REDIS_SENTINEL_MASTER": MASTER,
           "NOTIFICATIONS_SENDING_STALE_SECONDS": "10", "NOTIFICATIONS_SWEEP_SECONDS": "2",
           "NOTIFICATIONS_QUEUED_STALE_SECONDS": "30", "NOTIFICATIONS_DISPATCH_SECONDS": "1",
           # The shared send rate limit stays on: its Redis client goes through the sentinels too.
           "NOTIFICATIONS_RATE_LIMIT_PER_MINUTE": "60000", **ANY_HOUR,
           # The ground truth is the three planned reminders of each referral (as in the chaos suite).
           "NOTIFICATIONS_CONFIRMATION_AT_REFERRAL": "false"}
    stack = ChaosStack(env)
    engines = {"directory": directory.engine, "referrals": referrals.engine, "notifications": notifications.engine}
    machine = TimeMachine(notifications.engine)
    stream: Stream | None = None
    try:
        stack.start_all()  # every API answers /readyz: its Redis check found the master through the sentinels
        meetings = meetings_ahead()
        harness.publish_meetings(stack, engines, meetings)

        stream = Stream(stack.urls["referrals"], meetings, REFERRALS, rate=3.0, allowed=REFERRALS // 3).start()
        machine.run_every(2.0)
        wait_for(lambda: sum(a.outcome == "created" for a in stream.attempts) >= REFERRALS // 3, timeout=120,
                 what="the first third of the referrals")
        before = sentinel_deployment.master_port()
        stream.phase, stream.allowed = "failover", REFERRALS  # the rest are posted during and after the failover
        new_primary = sentinel_deployment.failover()
        assert (before, new_primary) == (sentinel_deployment.primary, sentinel_deployment.replica)

        stream.done.wait(timeout=300)
        deadline = time.monotonic() + 420
        while any((state := harness.outstanding(stream, machine, engines)).values()):
            assert time.monotonic() < deadline, f"not settled after the failover: {state}"
            time.sleep(1.0)
        machine.stop()

        # The broker and the app's keys live on the promoted primary: the stack followed it.
        assert any(sentinel_deployment.client(new_primary).scan_iter(match=f"{redis_prefix}*", count=500))
        outcomes = [a.outcome for a in stream.attempts]
        assert len(outcomes) == REFERRALS and set(outcomes) <= {"created", "ambiguous"}, outcomes
        assert sum(a.phase == "failover" for a in stream.attempts) >= REFERRALS // 2
        truth = harness.per_referral_truth(engines["referrals"], engines["notifications"], machine.planned_due,
                                           harness.expected_plan)
        created = {a.reference for a in stream.attempts if a.outcome == "created"}
        assert created <= set(truth), f"answered 201 and missing: {sorted(created - set(truth))}"
        assert all(info["rows"] == 1 for info in truth.values()), "a referral is stored twice"
        assert harness.scalar(engines["notifications"], "SELECT count(*) FROM referral_contacts WHERE planned") \
            == len(truth), "a referral is planned twice or not at all"
        for reference, info in truth.items():
            assert (info["reminders"], info["missing"], info["extra"]) == (3, 0, 0), (reference, info)
            assert (info["sent"], info["sent twice"], info["unsent"]) == (3, 0, 0), (reference, info)
        harness.assert_every_event_delivered_once(engines)
        with capsys.disabled():
            print(f"\nsentinel failover: {len(truth)} referrals, {3 * len(truth)} reminders sent once each; "
                  f"primary {before} -> {new_primary}")
    finally:
        if stream is not None:
            stream.stop()
        machine.stop()
        stack.stop()

"""End-to-end pipeline: referrals per second from POST to reminders planned and counters updated.

The whole stack runs as real processes on Postgres and Redis (3 APIs, one prefork worker per
service, the sender, 3 schedulers). REFERRALS referrals with consent are POSTed by 8 threads;
a referral is done when notifications has planned its reminders and the directory has counted
it (their inbox rows' processed_at). In the same run one worker of the same kind drains no-op
Celery tasks over the same Redis, before the burst and again right after it (the machine's speed
drifts: the ratio is to their mean): it says how far the pipeline is from the broker's ceiling.
Peak memory of every process is sampled throughout.

Then, with the queues drained, referrals arrive at a steady STEADY_RATE a second (default 20)
for STEADY_SECONDS (default 30): the latency from each POST to planned-and-counted when the
pipeline keeps up (its p95 is a target: under 1 s).

    .venv/bin/python bench/bench_pipeline.py [REFERRALS] [STEADY_RATE] [STEADY_SECONDS]   (default 600, 20, 30)
"""

from __future__ import annotations

import sys

import common
from rich.table import Table


def run() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    steady_rate = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    steady_seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
    loaded = common.load_data(1.0)
    stack = common.start_stack()
    memory = common.PeakMemory(stack)
    try:
        noop = common.noop_rate(2000)
        workers = [name for name in stack.processes if name.endswith("-worker")]
        cpu = {name: common.tree_cpu_seconds(stack.processes[name].pid) for name in [*workers, "referrals-api"]}
        delivered = common.deliveries()
        created = common.create_referrals(stack, count)
        done = common.pipeline_completion(created)
        delivered = common.deliveries() - delivered
        cpu = {name: common.tree_cpu_seconds(stack.processes[name].pid) - t for name, t in cpu.items()}
        per_referral = common.events_per_referral()
        # The machine's speed drifts over a run: the baseline again, right after the burst.
        noop_after = common.noop_rate(2000)
        steady_posted = common.create_referrals(stack, int(steady_rate * steady_seconds), rate=steady_rate)
        steady = common.pipeline_completion(steady_posted)
    finally:
        peaks = memory.stop()
        stack.stop()
    t = Table("measure", "value", title=f"End-to-end pipeline ({common.machine()})")
    t.add_row("data", f"{loaded['meetings']} meetings, {loaded['referrals']} referrals, {loaded['reminders']} reminders")
    t.add_row("referrals posted (201)", f"{created['statuses'].get(201, 0)} of {count}, {common.CONCURRENCY} threads")
    t.add_row("reminders planned", str(done["reminders"]))
    t.add_row("event deliveries per referral", f"{per_referral:.1f}")
    t.add_row("pipeline: referrals/s, POST to planned + counted", f"{done['rate']:.1f}")
    t.add_row("pipeline latency p50 / p95 (s)", f"{done['p50']:.2f} / {done['p95']:.2f}")
    baseline = (noop["rate"] + noop_after["rate"]) / 2
    noop_cpu_ms = (noop["cpu_ms"] + noop_after["cpu_ms"]) / 2
    t.add_row("raw Celery no-op tasks/s (1 worker, same Redis): before / after the burst, mean",
              f"{noop['rate']:.0f} / {noop_after['rate']:.0f}, {baseline:.0f}")
    t.add_row("pipeline event deliveries/s", f"{done['rate'] * per_referral:.0f}")
    t.add_row("ratio: referrals/s to no-op tasks/s", f"{done['rate'] / baseline:.3f}")
    t.add_row("ratio: event deliveries/s to no-op tasks/s", f"{done['rate'] * per_referral / baseline:.2f}")
    worker_ms = sum(cpu[name] for name in workers) * 1000 / max(delivered, 1)
    t.add_row("event workers' CPU per delivery (ms; the burst, all three workers)", f"{worker_ms:.2f}")
    t.add_row("no-op worker's CPU per task (ms, mean of both)", f"{noop_cpu_ms:.2f}")
    t.add_row("ratio: no-op CPU per task to workers' CPU per delivery (load-independent)",
              f"{noop_cpu_ms / worker_ms:.2f}")
    t.add_row("referrals API CPU per POST (ms)", f"{cpu['referrals-api'] * 1000 / count:.2f}")
    t.add_row(f"steady {steady_rate:.0f} referrals/s for {steady_seconds:.0f} s: POST p50 / p95 (ms)",
              f"{steady_posted['p50']:.0f} / {steady_posted['p95']:.0f}")
    t.add_row("steady: latency POST to planned + counted, p50 / p95 (s)", f"{steady['p50']:.2f} / {steady['p95']:.2f}")
    common.show(t)
    memory.peaks = peaks
    common.show(memory.table("Peak memory during the pipeline run"))


if __name__ == "__main__":
    common.main(run)

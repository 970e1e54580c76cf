"""How the figures grow from 10x less to 10x more data (meetings, referrals, reminders).

For each size (0.1x, 1x, 10x of 300 meetings, 2,000 referrals, 6,000 reminders) the data is
loaded into the real stack's Postgres databases, then: meeting search for a bounded time,
REFERRALS referral creations at 8 concurrent clients, and the end-to-end pipeline behind them
(POST to reminders planned and counters updated). Peak memory is the largest process's.

    .venv/bin/python bench/bench_scaling.py [REFERRALS] [SEARCH_SECONDS]   (default 150, 8 s)
"""

from __future__ import annotations

import sys

import common
from rich.table import Table

FACTORS = (0.1, 1.0, 10.0)


def run() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 8.0
    stack = common.start_stack()
    results = []
    try:
        for factor in FACTORS:
            common.clear_data()
            loaded = common.load_data(factor)
            memory = common.PeakMemory(stack)
            search = common.search(stack, seconds)
            created = common.create_referrals(stack, count)
            pipeline = common.pipeline_completion(created)
            peaks = memory.stop()
            results.append((factor, loaded, search, created, pipeline, max(peaks.values())))
    finally:
        stack.stop()
    t = Table("data", "meetings", "referrals", "reminders", "search req/s", "search p95 ms", "create req/s",
              "create p95 ms", "pipeline ref/s", "pipeline p95 s", "largest RSS MiB",
              title=f"Scaling with data size, {common.CONCURRENCY} clients, {count} referrals per size "
                    f"({common.machine()})")
    for factor, loaded, search, created, pipeline, peak in results:
        t.add_row(f"{factor:g}x", str(loaded["meetings"]), str(loaded["referrals"]), str(loaded["reminders"]),
                  f"{search['rate']:.0f}", common.ms(search["p95"]), f"{created['rate']:.0f}", common.ms(created["p95"]),
                  f"{pipeline['rate']:.1f}", f"{pipeline['p95']:.1f}", f"{peak / 1024:.0f}")
    common.show(t)


if __name__ == "__main__":
    common.main(run)

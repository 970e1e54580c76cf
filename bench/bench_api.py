"""API: requests per second and latency at a fixed concurrency (8 threads, loopback).

Public meeting search (near an outward code, 10 km, with and without a day filter) for a
bounded time, and creating referrals (consent and a mobile) for a bounded count, against
the real stack on Postgres with the 1x data set. Peak memory of every process is sampled.

    .venv/bin/python bench/bench_api.py [SEARCH_SECONDS] [REFERRALS]   (default 20 s, 400)
"""

from __future__ import annotations

import sys

import common
from rich.table import Table


def run() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    loaded = common.load_data(1.0)
    stack = common.start_stack()
    memory = common.PeakMemory(stack)
    try:
        search = common.search(stack, seconds)
        created = common.create_referrals(stack, count)
        common.pipeline_completion(created)  # let the workers finish before the stack stops
    finally:
        memory.stop()
        stack.stop()
    t = Table("endpoint", "requests", "req/s", "p50 ms", "p95 ms", "statuses",
              title=f"API at {common.CONCURRENCY} concurrent clients, {loaded['meetings']} meetings "
                    f"({common.machine()})")
    for name, r in (("GET /meetings?near=…&radius_km=10 (search)", search), ("POST /referrals (create)", created)):
        t.add_row(name, str(r["count"]), f"{r['rate']:.0f}", common.ms(r["p50"]), common.ms(r["p95"]),
                  ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items())))
    common.show(t)
    common.show(memory.table("Peak memory during the API run"))


if __name__ == "__main__":
    common.main(run)

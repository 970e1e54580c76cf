"""API tail latency at 8 connections, driven by wrk, against a bare FastAPI route in the same run.

The directory and referrals APIs run on Postgres with 2,400 meetings, each served as the README
tells ops to: one process per core with the production command (``SERVE``, ``PROCESSES``), the
processes sharing one listening socket (uvicorn ``--workers``); ``bench/bare_app.py`` (one async route, nothing else) is
served the very same way. wrk (C, the Debian package
``wrk``; installed with apt-get when missing and run as root) keeps 8 connections busy on:

- ``GET /meetings`` near one of 12 London areas (156 different searches: each area with and
  without a day or a fellowship), as the keyworkers of a region's services search in a busy minute;
- ``GET /meetings`` near a random point in London, each request its own (the search computed
  afresh: nothing kept answers it); the public search's per-address limit is raised far above the load but still
  counted in Redis;
- ``GET /meetings/{slug}`` over all 2,400 meetings (the meeting page's JSON);
- ``POST /referrals`` with consent and a distinct mobile, as the keyworker of the meeting's site.

Rounds alternate (bare, search, meeting, referrals) so the machine's other load hits every side
alike; ratios are per round, then the median and spread are printed.

    .venv/bin/python bench/bench_api_latency.py [SECONDS_PER_RUN] [ROUNDS]   (default 10 s, 3)
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import httpx
from rich.table import Table

CONNECTIONS = common.CONCURRENCY
MEETINGS_FACTOR = 8.0  # 2,400 meetings around London
# The production command (README, "Production and scaling"): one process per container, as many
# containers as cores; each API process is served like this.
SERVE = list(common.SERVE)
if os.environ.get("BENCH_SERVE") is not None:  # compare another command, e.g. BENCH_SERVE="" (uvicorn's defaults)
    SERVE = os.environ["BENCH_SERVE"].split()
# One process per core (BENCH_PROCESSES=1: the first passes' figures, one process serving all 8 connections).
PROCESSES = int(os.environ.get("BENCH_PROCESSES") or os.cpu_count() or 1)

LUA = """
local requests, i = {REQUESTS}, 0
init = function(args) i = math.random(#requests) end
request = function()
  i = i % #requests + 1
  local r = requests[i]
  return wrk.format(r[1], r[2], r[3], r[4])
end
done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format("FAMA-RESULT {\\"requests\\": %d, \\"seconds\\": %f, \\"p50\\": %f, \\"p99\\": %f, "
    .. "\\"max\\": %f, \\"non2xx\\": %d, \\"errors\\": %d}\\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3, e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk with apt-get", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        return shutil.which("wrk")
    sys.exit("wrk is not installed: Debian/Ubuntu: sudo apt-get install wrk; Fedora: sudo dnf install wrk; "
             "macOS: brew install wrk")


def lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a Lua string literal for this ASCII text


def wrk_script(requests: list[tuple[str, str, dict | None, str | None]]) -> str:
    rows = []
    for method, path, headers, body in requests:
        h = "{" + ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in (headers or {}).items()) + "}"
        rows.append(f"{{{lua_string(method)}, {lua_string(path)}, {h}, {lua_string(body) if body else 'nil'}}}")
    path = Path(tempfile.mkstemp(prefix="fama-wrk-", suffix=".lua")[1])
    path.write_text(LUA.replace("{REQUESTS}", "{\n" + ",\n".join(rows) + "\n}"))
    return str(path)


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU time of each process (seconds), from /proc: what a request costs in CPU,
    which, unlike its latency, hardly depends on what else the machine is running."""
    ticks, found = os.sysconf("SC_CLK_TCK"), {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return found


def database_backends() -> list[int]:
    """The Postgres server processes serving the bench's databases (they run on this machine)."""
    names = [f"fama_bench_{common.RUN}_{s}" for s in common.SERVICES]
    with common.psycopg.connect(common.ADMIN, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s)", (names,))]


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def run_wrk(wrk: str, base: str, script: str, seconds: float, server_pids: list[int] | None = None) -> dict:
    pids = server_pids or []
    server_before, db_before = cpu_seconds(pids), cpu_seconds(database_backends())
    out = subprocess.run([wrk, "-t2", f"-c{CONNECTIONS}", f"-d{seconds:.0f}s", "--timeout", "10s", "-s", script, base],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"FAMA-RESULT (\{.*\})", out)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    result = json.loads(match.group(1))
    result["rate"] = result["requests"] / result["seconds"]
    result["server_cpu_ms"] = cpu_used(server_before, cpu_seconds(pids)) * 1000 / max(result["requests"], 1)
    result["db_cpu_ms"] = cpu_used(db_before, cpu_seconds(database_backends())) * 1000 / max(result["requests"], 1)
    return result


class Server:
    """An app served as the README tells ops to: one uvicorn process (``SERVE``) per container and as
    many containers as the machine has cores. Here the containers are ``PROCESSES`` uvicorn worker
    processes on one port (``--workers``: the listening socket made once and shared), so the kernel
    spreads the connections between them as a load balancer in front of the containers would."""

    def __init__(self, name: str, app: str, processes: int):
        from tests.support.stack import free_port

        self.name, self.port, self.processes = name, free_port(), processes
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(f"/tmp/fama-bench-{common.RUN}-{name}.log", "w")  # noqa: SIM115
        # BENCH_PYSPY=/path/to/py-spy: sample every server into /tmp/fama-bench-<run>-<name>.folded (profiling);
        # BENCH_PYSPY_GIL=1: only the threads holding the GIL (where the CPU goes, not the waits)
        spy, gil = os.environ.get("BENCH_PYSPY"), ["--gil"] if os.environ.get("BENCH_PYSPY_GIL") else []
        profile = [spy, "record", "--subprocesses", "--nonblocking", *gil, "-r", "200", "-f", "raw", "-o",
                   f"/tmp/fama-bench-{common.RUN}-{name}.folded", "--"] if spy else []
        workers = ["--workers", str(processes)] if processes > 1 else []
        self.proc = subprocess.Popen([*profile, sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port",
                                      str(self.port), *workers, *SERVE], cwd=common.ROOT, env=dict(os.environ),
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pids(self) -> list[int]:
        """Every process serving: uvicorn's (its workers' supervisor, when more than one) and its children."""
        return [self.proc.pid, *common.descendants(self.proc.pid)]

    def wait(self, path: str) -> None:
        deadline = time.monotonic() + 90
        # Every process has started (one could otherwise take the first connections alone) ...
        while Path(self.log.name).read_text().count("Application startup complete") < self.processes:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start: {Path(self.log.name).read_text()[-2000:]}")
            time.sleep(0.2)
        while True:  # ... and answers
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer: {Path(self.log.name).read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT if os.environ.get("BENCH_PYSPY") else signal.SIGTERM)
            self.proc.wait(timeout=30)


class Memory:
    """Samples every process of each server (the uvicorn master and its workers) twice a second."""

    def __init__(self, servers: dict[str, Server]):
        import threading

        self.servers, self.largest, self.processes = servers, {}, {}
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for name, server in self.servers.items():
                pids = server.pids
                self.processes[name] = max(self.processes.get(name, 0), len(pids))
                for pid in pids:
                    self.largest[name] = max(self.largest.get(name, 0), common.rss_kb_one(pid))

    def stop(self) -> None:
        self._stop.set()


# Where the searches of a busy minute come from: a few services' neighbourhoods (the pilot
# sites of one region), asked with and without a day or a fellowship.
AREAS = ("CR0", "SE1", "N1", "W2", "E1", "SW9", "E8", "N7", "SE15", "NW1", "W12", "E14")


def area_search_requests() -> list:
    days = [f"&day={d}" for d in range(7)]
    fellowships = [f"&fellowship={f}" for f in common.FELLOWSHIPS]
    requests = [("GET", f"/meetings?near={code}&radius_km=10{extra}", None, None)
                for code in AREAS for extra in ("", *days, *fellowships)]
    random.Random(5).shuffle(requests)
    return requests


# Where a search never asked before is made: a point in London (a keyworker's exact address), with and
# without a day or a fellowship.
LONDON = (51.38, 51.62, -0.40, 0.20)


def search_requests(count: int) -> list:
    """``count`` searches near points in London (few, if any, asked twice)."""
    rng, (lat0, lat1, lng0, lng1) = random.Random(3), LONDON
    extras = ["", *(f"&day={d}" for d in range(7)), *(f"&fellowship={f}" for f in common.FELLOWSHIPS)]
    return [("GET", f"/meetings?near={rng.uniform(lat0, lat1):.5f},{rng.uniform(lng0, lng1):.5f}&radius_km=10"
                    f"{rng.choice(extras)}", None, None) for _ in range(count)]


def fresh_search_script() -> str:
    """A wrk script whose every request is a search near its own random point in London (as
    ``search_requests``; one in a billion asked twice), so nothing kept answers any."""
    lat0, lat1, lng0, lng1 = LONDON
    extras = ["", *(f"&day={d}" for d in range(7)), *(f"&fellowship={f}" for f in common.FELLOWSHIPS)]
    lua = LUA.replace("local requests, i = {REQUESTS}, 0\ninit = function(args) i = math.random(#requests) end\n"
                      "request = function()\n  i = i % #requests + 1\n  local r = requests[i]\n"
                      "  return wrk.format(r[1], r[2], r[3], r[4])\nend\n", f"""
local extras, threads = {{{", ".join(lua_string(e) for e in extras)}}}, 0
setup = function(thread) threads = threads + 1; thread:set("thread_number", threads) end
init = function(args) math.randomseed(os.time() * 1000 + thread_number) end
request = function()
  local near = string.format("%.5f,%.5f", {lat0} + math.random() * {lat1 - lat0:.2f}, {lng0} + math.random() * {lng1 - lng0:.2f})
  return wrk.format("GET", "/meetings?near=" .. near .. "&radius_km=10" .. extras[math.random(#extras)])
end
""")
    if "FAMA-RESULT" not in lua or "requests[i]" in lua:
        raise AssertionError("LUA changed: fresh_search_script no longer replaces its request function")
    path = Path(tempfile.mkstemp(prefix="fama-wrk-", suffix=".lua")[1])
    path.write_text(lua)
    return str(path)


def referral_requests(count: int) -> list:
    from tests.support.auth import auth

    site_of = dict(common.sql("directory", "SELECT slug, site_id FROM meetings"))
    slugs = [r[0] for r in common.sql("referrals", "SELECT slug FROM meeting_replica ORDER BY slug")]
    headers = {s: {**auth("keyworker", s), "Content-Type": "application/json"} for s in common.SITES}
    tag = "".join(random.choice("ABCDEFGHJK") for _ in range(3))
    requests = []
    for i in range(count):
        slug = slugs[i % len(slugs)]
        body = {"meeting_slug": slug, "client_reference": f"W{tag}-{i:06d}", "support": "none",
                "mobile": f"07911 {100000 + i % 900000:06d}", "consent": {"to_reminders": True, "wording_version": "2025-01"}}
        requests.append(("POST", "/referrals", headers[site_of[slug]], json.dumps(body)))
    return requests


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def run() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    wrk = ensure_wrk()
    loaded = common.load_data(MEETINGS_FACTOR)
    slugs = [r[0] for r in common.sql("directory", "SELECT slug FROM meetings")]
    servers = {"bare": Server("bare", "bench.bare_app:app", PROCESSES),
               "directory": Server("directory", "services.directory.api:app", PROCESSES),
               "referrals": Server("referrals", "services.referrals.api:app", PROCESSES)}
    for name, server in servers.items():
        server.wait("/" if name == "bare" else "/healthz")
    requests = {
        "bare": ("bare", [("GET", "/", None, None)]),
        "search (12 areas)": ("directory", area_search_requests()),
        "search (never asked before)": ("directory", search_requests(1)),
        "meeting": ("directory", [("GET", f"/meetings/{s}", None, None) for s in slugs]),
        "referrals": ("referrals", referral_requests(int(seconds * rounds * 400) + 1000)),
    }
    first_request = {name: rs[-1] for name, (_server, rs) in requests.items()}
    scripts = {name: (server, fresh_search_script() if name == "search (never asked before)" else
                      wrk_script(rs[:-1] if name == "referrals" else rs)) for name, (server, rs) in requests.items()}
    for name, (server, _script) in scripts.items():  # each request kind answers as it should before it is timed
        method, path, headers, body = first_request[name]
        response = httpx.request(method, servers[server].url + path, headers=headers, content=body)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"{name}: {method} {path} answered {response.status_code}: {response.text[:300]}")
    memory = Memory(servers)
    results: dict[str, list[dict]] = {k: [] for k in scripts}
    load = []
    try:
        for _ in range(rounds):
            for name, (server, script) in scripts.items():
                pids = servers[server].pids
                results[name].append(run_wrk(wrk, servers[server].url, script, seconds, pids))
                load.append(os.getloadavg()[0])
    finally:
        memory.stop()
        for server in servers.values():
            server.stop()
    t = Table("endpoint", "req/s per round", "p50 ms", "p99 ms per round", "max ms", "non-2xx", "errors",
              "throughput : bare, median (min–max)", "server CPU ms/req", "Postgres CPU ms/req",
              title=f"wrk, {CONNECTIONS} connections, {seconds:.0f} s × {rounds} rounds, {loaded['meetings']} meetings, "
                    f"{PROCESSES} × uvicorn {' '.join(SERVE)} per app ({common.machine()}; load average during runs "
                    f"{min(load):.1f}–{max(load):.1f})")
    bare = [r["rate"] for r in results["bare"]]
    for name, rs in results.items():
        ratio = spread([r["rate"] / b for r, b in zip(rs, bare, strict=True)]) if name != "bare" else "1"
        t.add_row(name, " / ".join(f"{r['rate']:.0f}" for r in rs), " / ".join(f"{r['p50']:.1f}" for r in rs),
                  " / ".join(f"{r['p99']:.1f}" for r in rs), f"{max(r['max'] for r in rs):.0f}",
                  str(sum(r["non2xx"] for r in rs)), str(sum(r["errors"] for r in rs)), ratio,
                  f"{statistics.median(r['server_cpu_ms'] for r in rs):.2f}",
                  f"{statistics.median(r['db_cpu_ms'] for r in rs):.2f}")
    common.show(t)
    m = Table("server", "processes", "peak RSS of the largest process (MiB)", title="Peak memory")
    for name in servers:
        m.add_row(name, str(memory.processes.get(name, 0)), f"{memory.largest.get(name, 0) / 1024:.0f}")
    common.show(m)


if __name__ == "__main__":
    common.main(run)

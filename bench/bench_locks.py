"""Locks/Activity under a pile-up: sampler cycle time, page and API latency with many
viewers, and the number of statements the dashboard sends (which must not grow with the
number of viewers).

Setup (all started and stopped here):
- a PostgreSQL server: the one named by DASHBOARD_BENCH_DATABASE_URL /
  DASHBOARD_TEST_DATABASE_URL / 127.0.0.1:5432 when it has room for the sessions;
  otherwise a private embedded server (pgserver, temporary data directory) whose
  max_connections is raised for the run -- the machine's server is never reconfigured;
- 300 client sessions on plain asyncpg connections (one process): a 50-waiter chain of
  row locks (waiter i waits on waiter i-1, the root is idle in transaction), plus idle,
  idle-in-transaction and sleeping active sessions;
- the dashboard in a child process (uvicorn), so the load generator does not share its
  event loop; the child counts every SQL statement its engines send.

Measured:
1. sampler cycle (in this process, 200 back-to-back cycles): SQL time, whole cycle, and
   whole cycle plus building the shared /api/locks and /api/activity bodies;
2. /locks and /api/locks latency with 1 and with 20 concurrent viewers, each polling both
   every second (what open browser tabs do), and a closed-loop stress run (20 viewers
   firing back to back);
3. statements per second sent by the dashboard during the 1-viewer and the 20-viewer
   windows, broken down by statement, so periodic housekeeping (settings every 30 s,
   the migration runner's poll) is told apart from anything a viewer would cause. The
   windows last 30 s so that each holds about one settings refresh.

Usage:
    .venv/bin/python bench/bench_locks.py [--sessions 300] [--chain 50] [--window 30] [--stress-window 10]
        [--url postgresql://...] [--embedded]

Bounded: the whole run is cancelled after --deadline seconds (default 240).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "bench_locks"
HEADROOM = 20  # dashboard connections, admin, slack


# --- the child: the dashboard, counting its statements ---------------------------------
def child_main(url: str, port: int, stats_path: str) -> None:
    import uvicorn
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from dashboard.app import create_app
    from dashboard.settings import Settings

    count = [0]
    kinds: dict[str, int] = {}

    @event.listens_for(Engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        count[0] += 1
        kind = " ".join(statement.split())[:48]
        kinds[kind] = kinds.get(kind, 0) + 1

    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_SECRET_KEY": "bench-secret-key-0123456789",
        }
    )
    app = create_app(settings)
    dash = app.state.dashboard

    def report() -> None:
        while True:
            sampler = dash.sampler
            data = {
                "t": time.time(),
                "statements": count[0],
                "kinds": dict(kinds),
                "sampler_statements": sampler.statements if sampler else 0,
                "sampler_cycles": sampler.cycles if sampler else 0,
            }
            tmp = stats_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, stats_path)
            time.sleep(0.1)

    threading.Thread(target=report, daemon=True).start()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


# --- helpers ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, round(p / 100 * (len(v) - 1))))
    return v[k]


def fmt(values: list[float]) -> str:
    return (
        f"n={len(values):5d}  median {statistics.median(values):7.2f} ms  "
        f"p95 {pct(values, 95):7.2f} ms  p99 {pct(values, 99):7.2f} ms  "
        f"max {max(values):7.2f} ms"
    )


def with_db(url: str, db: str) -> str:
    return make_url(url).set(database=db).render_as_string(hide_password=False)


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Server:
    """The server the bench runs against: an existing one, or a private pgserver."""

    def __init__(self, url: str, note: str, cleanup: Callable[[], None] | None = None) -> None:
        self.url = url
        self.note = note
        self._cleanup = cleanup

    def close(self) -> None:
        if self._cleanup:
            self._cleanup()


async def room_on(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        max_conn = int(await conn.fetchval("SHOW max_connections"))
        reserved = int(await conn.fetchval("SHOW superuser_reserved_connections"))
        used = int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity"))
    finally:
        await conn.close()
    return max_conn, max_conn - reserved - used


def start_embedded(max_connections: int) -> Server:
    import pgserver

    datadir = Path(tempfile.mkdtemp(prefix="bench-locks-pg-"))
    os.chmod(datadir, 0o755)  # pgserver runs postgres as its own user when we are root
    pgdata = datadir / "data"
    srv = pgserver.get_server(pgdata, cleanup_mode="stop")
    srv.psql(f"ALTER SYSTEM SET max_connections = {int(max_connections)};")
    srv.psql("ALTER SYSTEM SET shared_buffers = '64MB';")
    srv.cleanup()  # stop; the new max_connections needs a restart
    srv = pgserver.get_server(pgdata, cleanup_mode="delete")
    uri = srv.get_uri()

    def cleanup() -> None:
        srv.cleanup()
        with contextlib.suppress(OSError):
            datadir.rmdir()

    return Server(
        uri,
        f"private embedded server (pgserver) with max_connections={max_connections}",
        cleanup,
    )


async def choose_server(args: argparse.Namespace) -> Server:
    url = (
        args.url
        or os.environ.get("DASHBOARD_BENCH_DATABASE_URL")
        or os.environ.get("DASHBOARD_TEST_DATABASE_URL")
        or DEFAULT_URL
    )
    need = args.sessions + HEADROOM
    if not args.embedded:
        try:
            max_conn, room = await room_on(url)
        except Exception as exc:  # noqa: BLE001 - report and fall back
            print(f"server {url}: unreachable ({exc}); using an embedded server")
        else:
            print(f"server {url}: max_connections={max_conn}, free slots now {room}")
            if room >= need:
                return Server(url, f"{url} (max_connections={max_conn})")
            print(
                f"  {args.sessions} client sessions + {HEADROOM} headroom do not fit there; "
                "starting a private embedded server instead (the machine's server is "
                "not reconfigured)"
            )
    try:
        return await asyncio.to_thread(start_embedded, need + 80)
    except Exception as exc:  # noqa: BLE001
        if args.embedded:
            raise
        max_conn, room = await room_on(url)
        fit = max(args.chain + 2, room - HEADROOM)
        print(f"  embedded server failed ({exc}); using {fit} sessions on {url}")
        args.sessions = min(args.sessions, fit)
        return Server(url, f"{url} (max_connections={max_conn}, reduced session count)")


# --- the pile-up ------------------------------------------------------------------------
class Crowd:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conns: list[asyncpg.Connection] = []
        self.tasks: list[asyncio.Task[Any]] = []

    async def open(self, n: int, app: str) -> list[asyncpg.Connection]:
        out: list[asyncpg.Connection] = []
        for start in range(0, n, 25):  # in small batches: lean on 2 shared cores
            batch = await asyncio.gather(
                *[
                    asyncpg.connect(self.dsn, server_settings={"application_name": app})
                    for _ in range(min(25, n - start))
                ]
            )
            out.extend(batch)
        self.conns.extend(out)
        return out

    async def close(self) -> None:
        for c in self.conns:
            c.terminate()
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(BaseException):
                await t


async def build_pile(dsn: str, sessions: int, chain: int) -> Crowd:
    crowd = Crowd(dsn)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(
            "DROP TABLE IF EXISTS chain; CREATE TABLE chain (id int PRIMARY KEY, v int);"
            f"INSERT INTO chain SELECT g, 0 FROM generate_series(0, {int(chain)}) g"
        )
        links = await crowd.open(chain + 1, "bench-chain")
        for i, c in enumerate(links):
            await c.execute("BEGIN")
            await c.execute("UPDATE chain SET v = v + 1 WHERE id = $1", i)
        for i, c in enumerate(links[1:], start=1):
            crowd.tasks.append(
                asyncio.ensure_future(c.execute("UPDATE chain SET v = v + 1 WHERE id = $1", i - 1))
            )
        rest = sessions - len(links)
        n_tx, n_active = min(30, rest // 8), min(20, rest // 10)
        for c in await crowd.open(n_tx, "bench-idle-tx"):
            await c.execute("BEGIN")
            await c.execute("SELECT 1")
        for c in await crowd.open(n_active, "bench-sleeper"):
            crowd.tasks.append(asyncio.ensure_future(c.execute("SELECT pg_sleep(600)")))
        await crowd.open(rest - n_tx - n_active, "bench-idle")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            waiting = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'bench-chain' AND wait_event_type = 'Lock'"
            )
            if waiting == chain:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"only {waiting} of {chain} chain links are waiting")
        clients = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND application_name LIKE 'bench-%'"
        )
        print(f"pile-up: {clients} bench client sessions, {chain}-waiter chain of row locks")
    finally:
        await admin.close()
    return crowd


# --- measurements -----------------------------------------------------------------------
async def bench_sampler(url: str, cycles: int, chain: int) -> None:
    from dashboard.db import create_diagnostics_engine
    from dashboard.server.sampler import Sampler

    engine = create_diagnostics_engine(url)
    sampler = Sampler(engine)
    try:
        snap = await sampler.refresh()  # warm: connection, settings
        assert snap.blast_radius, "no blocking chain seen"
        sql_ms: list[float] = []
        cycle_ms: list[float] = []
        full_ms: list[float] = []
        for _ in range(cycles):
            t0 = time.perf_counter()
            snap = await sampler.refresh()
            t1 = time.perf_counter()
            snap.locks_json()
            snap.activity_json()
            snap.lock_groups()
            t2 = time.perf_counter()
            sql_ms.append(snap.duration_ms)
            cycle_ms.append((t1 - t0) * 1000)
            full_ms.append((t2 - t0) * 1000)
        root = snap.locks_json()["roots"][0]
        print(
            f"\n1. sampler cycle over {len(snap.sessions)} backends "
            f"(root blast radius {root['blast_radius']}, tree depth "
            f"{max(n['depth'] for n in snap.lock_groups()[0]['rows'])}, "
            f"blocked {snap.graph.blocked_count}; chain {chain})"
        )
        print(f"   sampling SQL (1 statement)      {fmt(sql_ms)}")
        print(f"   whole cycle                     {fmt(cycle_ms)}")
        print(f"   cycle + shared JSON/page bodies {fmt(full_ms)}")
    finally:
        await engine.dispose()


def read_stats(path: str) -> dict[str, Any]:
    for _ in range(50):
        try:
            with open(path) as f:
                data: dict[str, Any] = json.load(f)
                return data
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError("child statistics unavailable")


async def viewers(
    base: str, n: int, seconds: float, *, period_s: float | None
) -> dict[str, list[float]]:
    """n viewers; each GETs /locks and /api/locks every period_s (None: back to back)."""
    lat: dict[str, list[float]] = {"/locks": [], "/api/locks": []}
    errors = [0]
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=n * 2, max_keepalive_connections=n * 2)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as client:

        async def one(path: str) -> None:
            t = time.perf_counter()
            r = await client.get(path)
            ms = (time.perf_counter() - t) * 1000
            if r.status_code != 200:
                errors[0] += 1
            lat[path].append(ms)

        async def viewer() -> None:
            if period_s:
                await asyncio.sleep(random.uniform(0, period_s))
            while time.monotonic() < stop:
                t = time.monotonic()
                await one("/locks")
                await one("/api/locks")
                if period_s:
                    await asyncio.sleep(max(0.0, period_s - (time.monotonic() - t)))

        await asyncio.gather(*[viewer() for _ in range(n)])
    if errors[0]:
        print(f"   !! {errors[0]} non-200 responses")
    return lat


async def bench_http(url: str, window: float, stress_window: float) -> None:
    port = free_port()
    stats = tempfile.mktemp(prefix="bench-locks-stats-", suffix=".json")
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", url, str(port), stats],
        cwd=str(ROOT),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=2) as c:
            deadline = time.monotonic() + 30
            while True:
                try:
                    r = await c.get("/api/locks")
                    if r.status_code == 200 and r.json()["blocked_count"] > 0:
                        body = r.json()
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError("dashboard child did not come up")
                await asyncio.sleep(0.2)
        print(
            f"\n2. dashboard in a child process on {base}: /api/locks reports "
            f"{body['blocked_count']} blocked, root blast radius {body['roots'][0]['blast_radius']}"
        )
        rates: dict[str, float] = {}
        for label, n, period in (
            ("1 viewer, polling every 1 s", 1, 1.0),
            ("20 viewers, each polling every 1 s", 20, 1.0),
            ("20 viewers, back to back (stress)", 20, None),
        ):
            seconds = window if period else stress_window
            await viewers(base, n, 1.0, period_s=None)  # warm-up: templates, connections
            await asyncio.sleep(0.5)
            s0 = read_stats(stats)
            lat = await viewers(base, n, seconds, period_s=period)
            s1 = read_stats(stats)
            dt = s1["t"] - s0["t"]
            rate = (s1["statements"] - s0["statements"]) / dt
            cycles = (s1["sampler_cycles"] - s0["sampler_cycles"]) / dt
            rates[label] = rate
            total = len(lat["/locks"]) + len(lat["/api/locks"])
            print(f"   {label}, {seconds:.0f} s: {total / seconds:.0f} requests/s")
            print(f"     /locks      {fmt(lat['/locks'])}")
            print(f"     /api/locks  {fmt(lat['/api/locks'])}")
            sampler_rate = (s1["sampler_statements"] - s0["sampler_statements"]) / dt
            print(
                f"     dashboard SQL statements: {rate:.2f}/s, of which the sampler's "
                f"{sampler_rate:.2f}/s (sampler cycles {cycles:.2f}/s)"
            )
            by_kind = {
                k: (v - s0["kinds"].get(k, 0)) / dt
                for k, v in s1["kinds"].items()
                if v - s0["kinds"].get(k, 0) > 0
            }
            for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])[:6]:
                print(f"       {v:5.2f}/s  {k}")
        one, twenty = (
            rates["1 viewer, polling every 1 s"],
            rates["20 viewers, each polling every 1 s"],
        )
        stress = rates["20 viewers, back to back (stress)"]
        print(
            f"\n3. statements/s with 20 viewers / with 1 viewer = {twenty / one:.2f} "
            f"(stress / 1 viewer = {stress / one:.2f})"
        )
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
        with contextlib.suppress(OSError):
            os.unlink(stats)


async def run(args: argparse.Namespace) -> None:
    server = await choose_server(args)
    crowd: Crowd | None = None
    try:
        print(f"using {server.note}")
        admin = await asyncpg.connect(asyncpg_dsn(server.url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{BENCH_DB}"')
        finally:
            await admin.close()
        db_url = with_db(server.url, BENCH_DB)
        crowd = await build_pile(asyncpg_dsn(db_url), args.sessions, args.chain)
        async_url = make_url(db_url).set(drivername="postgresql+asyncpg")
        url = async_url.render_as_string(hide_password=False)
        await bench_sampler(url, args.cycles, args.chain)
        await bench_http(url, args.window, args.stress_window)
    finally:
        if crowd is not None:
            await crowd.close()
        with contextlib.suppress(Exception):
            admin = await asyncpg.connect(asyncpg_dsn(server.url))
            await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
            await admin.close()
        await asyncio.to_thread(server.close)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=300)
    p.add_argument("--chain", type=int, default=50)
    p.add_argument("--cycles", type=int, default=200)
    p.add_argument("--window", type=float, default=30.0, help="1- and 20-viewer windows (s)")
    p.add_argument("--stress-window", type=float, default=10.0)
    p.add_argument("--url", default=None)
    p.add_argument("--embedded", action="store_true", help="always use a private server")
    p.add_argument("--deadline", type=float, default=240.0)
    args = p.parse_args()
    if args.chain + 1 > args.sessions:
        p.error("--sessions must exceed --chain")

    async def bounded(coro: Awaitable[None]) -> None:
        async with asyncio.timeout(args.deadline):
            await coro

    t = time.monotonic()
    asyncio.run(bounded(run(args)))
    print(f"\nbench finished in {time.monotonic() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

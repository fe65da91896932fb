"""History: what writing samples costs, what a day of them weighs, how fast charts read.

On a scratch database (created and dropped here) of the server in
DASHBOARD_TEST_DATABASE_URL (like bench_runner.py; an embedded server otherwise):

1. the cost of writing one sample batch (`SampleWriter.flush()`: one INSERT of a
   flush interval's rows, 5 s at the default 2 s interval: 3 cycles x 3 series), p50/p99;
2. the sampler's cycle time with history on vs off, alternating in one run (the writer
   running, flushing every 0.5 s), against a server with idle sessions and a lock pile-up:
   medians, p99s and the ratio;
3. storage: one day of full-resolution rows (a row per series every 2 s, plus the
   writer's minute rows) for one instance, then the downsampled days after it (one row per
   minute), then the same for 50 instances of one service (a week of data: a full day and
   six downsampled days), as `pg_total_relation_size` of `samples` (indexes included);
   row contents are real sample rows built from this server's snapshots;
4. over that week of 50 instances: the 24-hour chart query (every series), the 7-day
   and 1-hour ones, and an incidents list over the week read from the incidents table
   directly (3,500 incidents with their peak trees): medians, against a 100 ms target.

    DASHBOARD_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        .venv/bin/python bench/bench_history.py [--instances 50] [--reps 15]

About two to three minutes on a 2-core machine (most of it loading the 50-instance week).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_runner import create_db, drop_db, server_url, url_for  # noqa: E402

from dashboard.db import create_diagnostics_engine, create_observed_engine  # noqa: E402
from dashboard.history import sample_queries as q  # noqa: E402
from dashboard.history.reader import HistoryReader  # noqa: E402
from dashboard.history.samples import (  # noqa: E402
    SampleRow,
    build_rows,
    pool_counters_of,
)
from dashboard.history.series import SPECS  # noqa: E402
from dashboard.history.writer import SampleWriter  # noqa: E402
from dashboard.pool.registry import PoolRegistry  # noqa: E402
from dashboard.server.sampler import Sampler  # noqa: E402
from dashboard.server.snapshot import Snapshot  # noqa: E402
from dashboard.state.store import StateStore  # noqa: E402

SCHEMA = "dashboard"
TARGET_MS = 100.0
DAY = timedelta(days=1)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def mb(n: int) -> str:
    return f"{n / 1024 / 1024:,.1f} MB"


class Load:
    """Sessions on the scratch database: idle ones, and a lock pile-up (1 root, 5 waiters)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conns: list[asyncpg.Connection] = []
        self.tasks: list[asyncio.Task[Any]] = []

    async def start(self, idle: int = 20, waiters: int = 5) -> None:
        admin = await asyncpg.connect(self.dsn)
        await admin.execute("CREATE TABLE IF NOT EXISTS accounts (id int PRIMARY KEY)")
        await admin.close()
        for _ in range(idle):
            self.conns.append(
                await asyncpg.connect(self.dsn, server_settings={"application_name": "idle"})
            )
        root = await asyncpg.connect(self.dsn, server_settings={"application_name": "billing"})
        self.conns.append(root)
        await root.execute("BEGIN; LOCK TABLE accounts IN SHARE MODE")
        for i in range(waiters):
            c = await asyncpg.connect(self.dsn, server_settings={"application_name": f"web-{i}"})
            self.conns.append(c)
            self.tasks.append(asyncio.ensure_future(c.execute("INSERT INTO accounts VALUES (1)")))

    async def calm(self) -> None:
        """End the pile-up (the root rolls back; the waiters finish)."""
        await self.conns[-6].execute("ROLLBACK")
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    async def stop(self) -> None:
        for c in self.conns:
            c.terminate()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return (time.perf_counter() - t0) * 1000.0


# -- 1 and 2: writing -------------------------------------------------------------------
async def bench_writes(
    store: StateStore, sampler: Sampler, registry: PoolRegistry, reps: int
) -> dict[str, Any]:
    snap = await sampler.refresh()
    rows = build_rows(snap, pool_counters_of(registry), service="app", instance="bench")
    writer = SampleWriter(store, service="app", instance="bench")
    batch = rows * 3  # one flush interval (5 s) at a 2 s sampling interval, ~3 cycles
    times = []
    for _ in range(max(60, reps * 8)):
        for r in batch:
            writer.enqueue(r)
        times.append(await timed(writer.flush))
    assert writer.status().ok, writer.status()
    row_bytes = sum(len(json.dumps(dict(r.data))) for r in rows) / len(rows)
    return {
        "batch_rows": len(batch),
        "p50": statistics.median(times),
        "p99": pct(times, 99),
        "json_bytes": row_bytes,
    }


async def bench_sampler(
    store: StateStore, sampler: Sampler, registry: PoolRegistry, rounds: int, cycles: int
) -> dict[str, Any]:
    writer = SampleWriter(
        store,
        service="app",
        instance="bench-sampler",
        pools_of=lambda: pool_counters_of(registry),
        flush_interval_s=0.5,
    )
    on = {"enabled": False}

    def listener(snap: Snapshot) -> None:
        if on["enabled"]:
            writer.on_snapshot(snap)

    sampler.add_listener(listener)
    await writer.start()
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(3):
            await sampler.refresh()  # warm up
        for rnd in range(rounds):
            for enabled in (False, True) if rnd % 2 == 0 else (True, False):
                on["enabled"] = enabled
                for _ in range(cycles):
                    times[enabled].append(await timed(sampler.refresh))
                    await asyncio.sleep(0.01)  # let the writer's flush interleave
    finally:
        await writer.stop()
    listen_us = []
    snap = sampler.latest
    assert snap is not None
    probe = SampleWriter(
        store, service="app", instance="probe", pools_of=lambda: pool_counters_of(registry)
    )
    for _ in range(500):
        t0 = time.perf_counter()
        probe.on_snapshot(snap)
        listen_us.append((time.perf_counter() - t0) * 1e6)
    return {
        "off_p50": statistics.median(times[False]),
        "on_p50": statistics.median(times[True]),
        "off_p99": pct(times[False], 99),
        "on_p99": pct(times[True], 99),
        "cycles": len(times[True]),
        "written": writer.status().written,
        "listener_us": statistics.median(listen_us),
        "sessions": len(snap.sessions),
    }


# -- 3: storage -------------------------------------------------------------------------
GENERATE = """
INSERT INTO "dashboard".samples (at, series, service, instance, resolution_s, data)
SELECT t, s.series, 'app', 'pod-' || lpad(i::text, 3, '0'), $5::smallint,
       (CASE WHEN random() < 0.05 THEN s.busy ELSE s.calm END)
         || jsonb_build_object('level', floor(random() * 6)::int, s.key,
                               floor(random() * 6)::int)
         || (CASE WHEN $5 = 60 THEN '{"samples": 30}'::jsonb ELSE '{}'::jsonb END)
FROM generate_series($1::timestamptz, $2::timestamptz - make_interval(secs => $6),
                     make_interval(secs => $6)) t
CROSS JOIN generate_series($3::int, $4::int) i
CROSS JOIN jsonb_to_recordset($7::jsonb) AS s(series text, key text, calm jsonb, busy jsonb)
"""
KEYS = {"pool": "checked_out", "locks": "blocked_count", "activity": "total"}


async def size_of(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_total_relation_size('\"dashboard\".samples')"))


async def generate(
    conn: asyncpg.Connection,
    templates: str,
    start: datetime,
    end: datetime,
    first: int,
    last: int,
    *,
    resolution_s: int,
    step_s: int,
) -> None:
    await conn.execute(GENERATE, start, end, first, last, resolution_s, float(step_s), templates)


async def service_rows(store: StateStore, since: datetime, until: datetime) -> None:
    """What the retention job writes every minute, for a whole window at once."""
    async with store.begin() as conn:
        await conn.execute(q.NO_JIT)
        for spec in SPECS.values():
            lo = since
            while lo < until:
                hi = min(until, lo + timedelta(hours=12))
                await conn.execute(q.delete_service_rows(spec.name, lo, hi))
                await conn.execute(q.rollup_service(spec, lo, hi))
                lo = hi


async def bench_storage(
    store: StateStore, dsn: str, templates: str, now: datetime, instances: int
) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn, server_settings={"statement_timeout": "0"})
    try:
        await conn.execute('TRUNCATE "dashboard".samples')
        base = await size_of(conn)
        day_start = now - DAY
        week_start = now - 7 * DAY
        out: dict[str, Any] = {}
        t0 = time.perf_counter()
        # one instance: a day at full resolution (+ the writer's minute rows of that day)
        await generate(conn, templates, day_start, now, 1, 1, resolution_s=0, step_s=2)
        await generate(conn, templates, day_start, now, 1, 1, resolution_s=60, step_s=60)
        one_full = await size_of(conn)
        await generate(conn, templates, week_start, day_start, 1, 1, resolution_s=60, step_s=60)
        one_week = await size_of(conn)
        out["one_full_day"] = one_full - base
        out["one_minute_day"] = (one_week - one_full) / 6
        # the other instances of the service: the same week
        rest = (2, instances)
        await generate(conn, templates, day_start, now, *rest, resolution_s=0, step_s=2)
        await generate(conn, templates, day_start, now, *rest, resolution_s=60, step_s=60)
        many_full = await size_of(conn)
        await generate(conn, templates, week_start, day_start, *rest, resolution_s=60, step_s=60)
        many_week = await size_of(conn)
        out["many_full_day"] = many_full - one_week + out["one_full_day"]
        out["many_minute_day"] = (many_week - many_full) / 6 + out["one_minute_day"]
        out["week_total"] = many_week - base
        # the retention job's service rows (one per series, minute and service)
        t1 = time.perf_counter()
        await service_rows(store, now - 7 * DAY, now)
        out["service_rows_s"] = time.perf_counter() - t1
        out["service_day"] = (await size_of(conn) - many_week) / 7
        out["rows"] = int(await conn.fetchval('SELECT count(*) FROM "dashboard".samples'))
        out["load_s"] = time.perf_counter() - t0
        await conn.execute('ANALYZE "dashboard".samples')
        return out
    finally:
        await conn.close()


async def load_incidents(dsn: str, now: datetime, instances: int, per_day: int) -> int:
    """`per_day` incidents per instance and day over the week, each with a peak tree."""
    rnd = random.Random(7)
    peak = {
        "roots": [
            {
                "pid": 4242,
                "blast_radius": 6,
                "query": "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
                "blocked": [
                    {"pid": 5000 + k, "query": "SELECT * FROM accounts WHERE id = $1"}
                    for k in range(6)
                ],
            }
        ]
    }
    rows = []
    for inst in range(1, instances + 1):
        for day in range(7):
            for k in range(per_day):
                start = now - timedelta(days=day, seconds=rnd.randint(0, 86_000))
                end = start + timedelta(seconds=rnd.randint(5, 600))
                kind = "lock_pileup" if k % 2 else "pool_exhausted"
                rows.append(
                    (
                        kind,
                        f"{inst}-{day}-{k}",
                        "app",
                        f"pod-{inst:03d}",
                        start,
                        end,
                        end,
                        4242,
                        json.dumps({"pid": 4242, "user": "app", "query": "UPDATE accounts"}),
                        rnd.randint(3, 40),
                        start + timedelta(seconds=3),
                        json.dumps(peak),
                        f"{kind}: 6 sessions behind pid 4242",
                    )
                )
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            'INSERT INTO "dashboard".incidents (kind, key, service, instance, started_at, '
            "ended_at, updated_at, root_pid, root, peak_blast_radius, peak_at, peak, summary) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9::jsonb,$10,$11,$12::jsonb,$13)",
            rows,
        )
        await conn.execute('ANALYZE "dashboard".incidents')
    finally:
        await conn.close()
    return len(rows)


INCIDENT_LIST = """
SELECT id, kind, service, instance, started_at, ended_at, root_pid, peak_blast_radius, summary
FROM "dashboard".incidents
WHERE started_at >= $1
ORDER BY started_at DESC, id DESC
LIMIT 200
"""


async def bench_reads(store: StateStore, dsn: str, now: datetime, reps: int) -> dict[str, float]:
    reader = HistoryReader(store, cache_charts=False)  # every call reads the database
    out: dict[str, float] = {}

    async def median_of(fn: Callable[[], Awaitable[Any]]) -> float:
        await fn()  # warm
        return statistics.median([await timed(fn) for _ in range(reps)])

    for series in ("locks", "pool", "activity"):
        for rng in ("24h", "7d", "1h"):

            async def chart(series: str = series, rng: str = rng) -> Any:
                data = await reader.chart(series, rng, now=now, service="app")
                assert data.points, (series, rng)
                return data

            out[f"chart {series} {rng}"] = await median_of(chart)

    async def one_instance() -> Any:
        return await reader.chart("pool", "24h", now=now, service="app", instance="pod-007")

    out["chart pool 24h, one instance"] = await median_of(one_instance)
    conn = await asyncpg.connect(dsn)
    try:

        async def incident_list() -> Any:
            rows = await conn.fetch(INCIDENT_LIST, now - 7 * DAY)
            assert len(rows) == 200
            return rows

        out["incidents list 7d (newest 200)"] = await median_of(incident_list)
    finally:
        await conn.close()
    return out


# -- main -------------------------------------------------------------------------------
async def templates_from(
    sampler: Sampler, registry: PoolRegistry, load: Load
) -> tuple[str, list[SampleRow]]:
    """Real rows of this server: calm (idle sessions) and busy (during the pile-up)."""
    busy = build_rows(
        await sampler.refresh(), pool_counters_of(registry), service="a", instance="b"
    )
    await load.calm()
    calm = build_rows(
        await sampler.refresh(), pool_counters_of(registry), service="a", instance="b"
    )
    tpl = [
        {"series": c.series, "key": KEYS[c.series], "calm": dict(c.data), "busy": dict(b.data)}
        for c, b in zip(calm, busy, strict=True)
    ]
    return json.dumps(tpl), busy


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=50)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--cycles", type=int, default=15)
    args = ap.parse_args()
    with server_url() as server:
        db = await create_db(server)
        url = url_for(server, db, "postgresql+asyncpg")
        dsn = url_for(server, db, "postgresql")
        store = StateStore(url, SCHEMA)
        diag = create_diagnostics_engine(url)
        observed = create_observed_engine(url, pool_size=5, max_overflow=10, pool_timeout=30)
        registry = PoolRegistry.for_engines({"main": observed})
        sampler = Sampler(diag, interval_s=2.0)
        load = Load(dsn)
        t_start = time.perf_counter()
        try:
            await store.ensure()
            await load.start()
            print(f"history benchmark on {server.rsplit('@', 1)[-1]} (scratch database {db})")
            w = await bench_writes(store, sampler, registry, args.reps)
            print(
                f"\n1. one sample batch ({w['batch_rows']} rows, one INSERT, commit): "
                f"p50 {w['p50']:.2f} ms, p99 {w['p99']:.2f} ms "
                f"(rows average {w['json_bytes']:.0f} bytes of JSON)"
            )
            s = await bench_sampler(store, sampler, registry, args.rounds, args.cycles)
            ratio = s["on_p50"] / s["off_p50"]
            print(
                f"\n2. sampler cycle ({s['sessions']} backends, a pile-up of 5), alternating "
                f"{args.rounds} rounds x {args.cycles} cycles:\n"
                f"   history off: p50 {s['off_p50']:.2f} ms, p99 {s['off_p99']:.2f} ms\n"
                f"   history on:  p50 {s['on_p50']:.2f} ms, p99 {s['on_p99']:.2f} ms "
                f"(writer flushing every 0.5 s, {s['written']} rows written)\n"
                f"   ratio on/off (p50): {ratio:.3f}; the listener itself: "
                f"{s['listener_us']:.0f} µs per cycle"
            )
            templates, _ = await templates_from(sampler, registry, load)
            now = datetime.now(UTC).replace(microsecond=0)
            st = await bench_storage(store, dsn, templates, now, args.instances)
            n = args.instances
            retention = 14
            one_total = st["one_full_day"] + (retention - 1) * st["one_minute_day"]
            many_total = st["many_full_day"] + (retention - 1) * st["many_minute_day"]
            print(
                f"\n3. storage (pg_total_relation_size of samples, indexes included; "
                f"{st['rows']:,} rows loaded in {st['load_s']:.0f} s):\n"
                f"   1 instance:   first day (full resolution + minute rows) "
                f"{mb(st['one_full_day'])}; each later day {mb(int(st['one_minute_day']))}; "
                f"{retention}-day retention ≈ {mb(int(one_total))}\n"
                f"   {n} instances: first day {mb(st['many_full_day'])}; each later day "
                f"{mb(int(st['many_minute_day']))}; {retention}-day retention ≈ "
                f"{mb(int(many_total))} (this week: {mb(st['week_total'])})\n"
                f"   service rows (what long charts read): {mb(int(st['service_day']))} a day "
                f"whatever the instances (a week computed in {st['service_rows_s']:.1f} s)"
            )
            incidents = await load_incidents(dsn, now, n, per_day=10)
            reads = await bench_reads(store, dsn, now, args.reps)
            print(
                f"\n4. reads over a week of {n} instances ({incidents:,} incidents), "
                f"median of {args.reps}:"
            )
            for name, ms in reads.items():
                target = name.startswith("chart") and " 24h" in name or "incidents" in name
                mark = ("ok" if ms < TARGET_MS else "OVER") if target else "  "
                print(f"   {mark:>4}  {name:<34} {ms:8.1f} ms")
            print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
        finally:
            await load.stop()
            await sampler.stop()
            await store.stop()
            await diag.dispose()
            await observed.dispose()
            await drop_db(server, db)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

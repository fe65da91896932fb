"""History against a real PostgreSQL: sampler cycles write samples that `/api/history` and
the chart fragment read back; bad parameters are 400s naming the parameter; retention
deletes what is too old and downsamples to one row per minute; the writer survives a
state database that goes away (sampling goes on, nothing crashes, the rows come later);
samples survive a restart."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from tests.lock_chain import Pile, app_for, refresh
from tests.tcp_proxy import ThreadedPgProxy

SCHEMA = "dashboard"


def call(client: Any, fn: Any, *args: Any) -> Any:
    """Run a coroutine function on the app's own loop (asyncpg connections belong to it)."""
    return asyncio.to_thread(client.blocking_portal.call, fn, *args)


async def flush(client: Any) -> int:
    writer = client.app.state.dashboard.history.writer
    written: int = await call(client, writer.flush)
    return written


async def history(client: Any, query: str) -> dict[str, Any]:
    r = await client.get(f"/api/history?{query}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_sampler_cycles_write_samples_that_the_api_returns(
    db_url: str, plain_db_url: str
) -> None:
    app = app_for(db_url, DASHBOARD_SERVICE_NAME="billing", DASHBOARD_INSTANCE_NAME="pod-a")
    async with Pile(plain_db_url) as pile, AsyncTestClient(app) as client:
        await pile.sql("CREATE TABLE accounts (id int PRIMARY KEY)")
        root = await pile.session("billing-api")
        await root.execute("BEGIN; LOCK TABLE accounts IN SHARE MODE")
        for i in range(3):
            await pile.block(await pile.session(f"web-{i}"), "INSERT INTO accounts VALUES (1)")
        since = datetime.now(UTC) - timedelta(seconds=5)
        for _ in range(3):
            await refresh(client)
        assert await flush(client) >= 9  # three series per cycle (the lifespan's cycle too)

        body = await history(client, f"series=locks&since={since.isoformat()}")
        assert body["series"] == "locks" and body["resolution_s"] == 0
        points = body["points"]
        assert len(points) >= 3
        assert [p["at"] for p in points] == sorted(p["at"] for p in points)
        last = points[-1]
        assert last["service"] == "billing" and last["instance"] == "pod-a"
        # (the server may hold other tests' pile-ups too: find ours)
        assert last["blocked_count"] >= 3 and last["max_blast_radius"] >= 3
        ours = [r for r in last["roots"] if r["pid"] == root.get_server_pid()]
        assert ours and ours[0]["blast_radius"] == 3
        assert ours[0]["application_name"] == "billing-api"
        assert last["longest_wait_s"] is not None

        activity = (await history(client, "series=activity&range=15m"))["points"][-1]
        assert activity["max_connections"] > 0 and activity["total"] >= 4
        assert activity["by_state"].get("active", 0) >= 3
        pool = (await history(client, "series=pool&range=15m"))["points"][-1]
        assert pool["pools"][0]["name"] == "main" and pool["limit"] == 15

        assert (await history(client, "series=locks&instance=pod-b"))["points"] == []
        limited = await history(client, f"series=locks&since={since.isoformat()}&limit=2")
        assert len(limited["points"]) == 2 and limited["truncated"] is True
        assert limited["next_since"] == limited["points"][-1]["at"]

        chart = await client.get("/history/chart?series=locks&range=15m")
        assert chart.status_code == 200
        n = int(re.search(r'data-points="(\d+)"', chart.text).group(1))  # type: ignore[union-attr]
        assert n >= 1 and "hist-line" in chart.text


async def test_bad_parameters_are_400_naming_them(db_url: str) -> None:
    async with AsyncTestClient(app_for(db_url)) as client:
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        cases = {
            "series=disks": ("series", "not one of pool, locks, activity"),
            "since=2026-01-01T00:00:00Z": ("series", "required"),
            "series=locks&since=last%20tuesday": ("since", "not an ISO 8601 timestamp"),
            f"series=locks&since={future.replace('+', '%2B')}": ("since", "in the future"),
            "series=locks&range=2h": ("range", "not one of 15m, 1h, 6h, 24h, 7d"),
            "series=locks&limit=-3": ("limit", "between 1 and"),
        }
        for query, (field, words) in cases.items():
            r = await client.get(f"/api/history?{query}")
            assert r.status_code == 400, (query, r.text)
            body = r.json()
            assert body["extra"] == {"code": "invalid_parameter", "field": field}, query
            assert words in body["error"], (query, body)
        for query, field in (("series=x&range=1h", "series"), ("series=locks&range=1y", "range")):
            r = await client.get(f"/history/chart?{query}")
            assert r.status_code == 400 and r.json()["extra"]["field"] == field


async def insert_rows(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    await conn.executemany(
        f'INSERT INTO "{SCHEMA}".samples (at, series, service, instance, resolution_s, data) '
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        [(*r[:5], json.dumps(r[5])) for r in rows],
    )


def full_rows(start: datetime, seconds: int, series: str, instance: str) -> list[tuple[Any, ...]]:
    """A row every 2 s for `seconds`, with a level that peaks at 20 s into each minute."""
    out = []
    for k in range(0, seconds, 2):
        at = start + timedelta(seconds=k)
        level = 50 if at.second == 20 else at.second % 7
        out.append((at, series, "app", instance, 0, {"level": level, "blocked_count": level}))
    return out


async def test_retention_deletes_old_rows_and_downsamples_to_one_row_per_minute(
    db_url: str, plain_db_url: str
) -> None:
    async with AsyncTestClient(app_for(db_url)) as client:
        dash = client.app.state.dashboard
        assert dash.history.retention.policy.retention == timedelta(days=14)
        now = datetime.now(UTC).replace(microsecond=0)
        old = (now - timedelta(hours=27)).replace(second=0)  # downsampled: 3 minutes
        later = (now - timedelta(hours=25, minutes=30)).replace(second=0)  # another chunk
        recent = now - timedelta(hours=2)  # kept at full resolution
        conn = await asyncpg.connect(plain_db_url)
        try:
            rows: list[tuple[Any, ...]] = []
            for instance in ("pod-a", "pod-b"):
                for series in ("locks", "activity"):
                    rows += full_rows(old, 180, series, instance)
                    rows += full_rows(later, 120, series, instance)
                    rows += full_rows(recent, 60, series, instance)
            # a minute the writer already rolled up keeps its row (no duplicate)
            rows.append((old, "locks", "app", "pod-a", 60, {"level": 99, "samples": 30}))
            expired = now - timedelta(days=15)
            rows += [(expired, "pool", "app", "gone", 60, {"level": 1})] * 3
            rows += [(expired, "locks", "app", "gone", 0, {"level": 1})] * 2
            await insert_rows(conn, rows)
            await conn.execute(
                f'INSERT INTO "{SCHEMA}".incidents (kind, key, service, instance, started_at, '
                "ended_at, updated_at, peak_blast_radius, summary) VALUES "
                "('lock_pileup', 'old', 'app', 'gone', $1, $2, $2, 4, 'ended long ago'),"
                "('lock_pileup', 'still-open', 'app', 'gone', $1, NULL, $2, 4, 'never ended'),"
                "('pool_exhausted', 'recent', 'app', 'pod-a', $3, $3, $3, 0, 'yesterday')",
                now - timedelta(days=16),
                now - timedelta(days=15),
                now - timedelta(days=1),
            )

            retention = dash.history.retention
            first = await call(client, retention.run_pass)
            assert first.locked and first.more  # bounded: the later chunk waits
            assert first.expired_samples == 5 and first.expired_incidents == 1
            passes = [first]
            while passes[-1].more:
                passes.append(await call(client, retention.run_pass))
                assert len(passes) < 10
            assert sum(p.full_rows_removed for p in passes) == 2 * 2 * (90 + 60)
            assert sum(p.minute_rows for p in passes) == 2 * 2 * 5 - 1

            minute_rows = await conn.fetch(
                f'SELECT at, series, instance, resolution_s, data FROM "{SCHEMA}".samples '
                "WHERE at < $1 ORDER BY series, instance, at",
                now - timedelta(hours=24),
            )
            assert all(r["resolution_s"] == 60 for r in minute_rows)
            per_key: dict[tuple[str, str], list[datetime]] = {}
            for r in minute_rows:
                per_key.setdefault((r["series"], r["instance"]), []).append(r["at"])
            assert set(per_key) == {
                (s, i) for s in ("locks", "activity") for i in ("pod-a", "pod-b")
            }
            for ats in per_key.values():
                assert len(ats) == len(set(ats)) == 5  # one row per minute
                assert all(at.second == 0 for at in ats)
            by = {(r["series"], r["instance"], r["at"]): json.loads(r["data"]) for r in minute_rows}
            kept = by[("locks", "pod-a", old)]
            assert kept == {"level": 99, "samples": 30}  # the writer's own minute row
            rolled = by[("activity", "pod-b", old + timedelta(minutes=1))]
            assert rolled["level"] == 50 and rolled["samples"] == 30  # the minute's worst
            recent_full = await conn.fetchval(
                f'SELECT count(*) FROM "{SCHEMA}".samples WHERE resolution_s = 0 '
                "AND at >= $1 AND instance LIKE 'pod-%'",
                now - timedelta(hours=3),
            )
            assert recent_full == 2 * 2 * 30
            incidents = await conn.fetch(f'SELECT key FROM "{SCHEMA}".incidents ORDER BY key')
            assert [r["key"] for r in incidents] == ["recent", "still-open"]

            # the 7-day API reads minute rows: one per minute and instance
            body = await history(client, "series=activity&range=7d&instance=pod-a")
            assert body["resolution_s"] == 60
            assert len([p for p in body["points"] if p["resolution_s"] == 60]) == 5
            chart = await client.get("/history/chart?series=activity&range=7d")
            assert chart.status_code == 200 and "one point a minute" in chart.text
        finally:
            await conn.close()


async def test_chart_marks_incidents_from_the_incidents_table(
    db_url: str, plain_db_url: str
) -> None:
    async with AsyncTestClient(app_for(db_url)) as client:
        await refresh(client)
        await flush(client)
        now = datetime.now(UTC)
        conn = await asyncpg.connect(plain_db_url)
        try:
            ids = [
                await conn.fetchval(
                    f'INSERT INTO "{SCHEMA}".incidents (kind, key, service, instance, '
                    "started_at, ended_at, updated_at, peak_blast_radius, summary) "
                    "VALUES ($1, $2, 'app', 'x', $3, $4, $3, 5, $5) RETURNING id",
                    kind,
                    key,
                    start,
                    end,
                    summary,
                )
                for kind, key, start, end, summary in (
                    (
                        "lock_pileup",
                        "a",
                        now - timedelta(minutes=40),
                        now - timedelta(minutes=35),
                        "5 behind pid 7",
                    ),
                    (
                        "pool_exhausted",
                        "b",
                        now - timedelta(minutes=5),
                        None,
                        "pool main: 4 waiting",
                    ),
                    (
                        "lock_pileup",
                        "c",
                        now - timedelta(hours=3),
                        now - timedelta(hours=2),
                        "too old for 1h",
                    ),
                    ("lock_pileup", "d", now - timedelta(minutes=20), None, "another service"),
                )
            ]
            await conn.execute(
                f"UPDATE \"{SCHEMA}\".incidents SET service = 'other' WHERE id = $1", ids[3]
            )
        finally:
            await conn.close()
        r = await client.get("/history/chart?series=locks&range=1h")
        assert r.status_code == 200
        marked = re.findall(r'<rect [^>]*data-incident-id="(\d+)"', r.text)
        assert sorted(int(x) for x in marked) == sorted(ids[:2])
        assert "hist-band-primary" in r.text and "hist-band-open" in r.text
        assert "5 behind pid 7" in r.text
        r6 = await client.get("/history/chart?series=locks&range=6h")
        assert len(re.findall(r"<rect [^>]*data-incident-id", r6.text)) == 3


async def test_the_writer_survives_a_state_database_that_goes_away(
    pg_server_url: str, db_name: str, db_url: str
) -> None:
    proxy = ThreadedPgProxy(pg_server_url)
    proxy.start()
    try:
        app = app_for(db_url, DASHBOARD_STATE_DATABASE_URL=proxy.url(db_name))
        async with AsyncTestClient(app) as client:
            dash = client.app.state.dashboard
            writer = dash.history.writer
            await refresh(client)
            assert await flush(client) > 0
            before = writer.status().written

            proxy.stop()
            cycles_before = dash.sampler.cycles
            for _ in range(3):
                await refresh(client)  # the sampler keeps sampling the target
            assert dash.sampler.cycles == cycles_before + 3 and dash.sampler.last_error is None
            assert await flush(client) == 0
            status = writer.status()
            assert not status.ok and status.gap_since is not None
            assert status.last_error and status.queued >= 6
            assert status.written == before

            assert (await client.get("/locks")).status_code == 200  # live pages work
            api = await client.get("/api/locks")
            assert api.status_code == 200 and "blocked_count" in api.json()
            down = await client.get("/api/history?series=locks")
            assert down.status_code == 503
            assert down.json()["error"].startswith("history unavailable: ")
            chart = await client.get("/history/chart?series=locks&range=15m")
            assert chart.status_code == 200
            assert "history unavailable: " in chart.text and "data-history-gap" in chart.text

            proxy.start()  # back: the queued rows are written, no gap for a short outage
            queued = writer.status().queued
            assert await flush(client) == queued
            status = writer.status()
            assert status.ok and status.gap_since is None and status.dropped == 0
            body = await history(client, "series=locks&range=15m")
            assert len(body["points"]) == dash.sampler.cycles
    finally:
        proxy.close()


async def test_the_queue_is_bounded_and_counts_what_it_drops(
    pg_server_url: str, db_name: str, db_url: str
) -> None:
    proxy = ThreadedPgProxy(pg_server_url)
    proxy.start()
    try:
        app = app_for(db_url, DASHBOARD_STATE_DATABASE_URL=proxy.url(db_name))
        async with AsyncTestClient(app) as client:
            writer = client.app.state.dashboard.history.writer
            await flush(client)
            proxy.stop()
            writer.max_queue = 7
            for _ in range(4):
                await refresh(client)  # 3 rows per cycle: 12 > 7
            status = writer.status()
            assert status.queued == 7 and status.dropped >= 5
            await flush(client)
            assert writer.status().queued == 7  # still there, still bounded
    finally:
        proxy.close()


async def test_samples_survive_a_restart(db_url: str) -> None:
    first = app_for(db_url, DASHBOARD_INSTANCE_NAME="before-restart")
    async with AsyncTestClient(first) as client:
        for _ in range(2):
            await refresh(client)
        cycles = client.app.state.dashboard.sampler.cycles
    # the lifespan's stop wrote what was queued
    second = app_for(db_url, DASHBOARD_INSTANCE_NAME="after-restart")
    async with AsyncTestClient(second) as client:
        body = await history(client, "series=activity&range=15m&instance=before-restart")
        assert len(body["points"]) == cycles
        assert {p["instance"] for p in body["points"]} == {"before-restart"}
        minute = await history(client, "series=locks&range=24h&instance=before-restart")
        assert any(p["resolution_s"] == 60 for p in minute["points"])  # open minute, flushed
        chart = await client.get("/history/chart?series=activity&range=15m")
        n = int(re.search(r'data-points="(\d+)"', chart.text).group(1))  # type: ignore[union-attr]
        assert n >= 1


async def test_service_rows_combine_the_instances_for_long_charts(
    db_url: str, plain_db_url: str
) -> None:
    async with AsyncTestClient(app_for(db_url, DASHBOARD_SERVICE_NAME="api")) as client:
        retention = client.app.state.dashboard.history.retention
        now = datetime.now(UTC)
        minute = now.replace(second=0, microsecond=0)
        rows: list[tuple[Any, ...]] = []
        for k, (co, wt, blocked) in enumerate(((2, 1, 1), (3, 0, 5), (4, 2, 2))):
            for back in range(2, 6):  # the writer's minute rows of the last minutes
                at = minute - timedelta(minutes=back)
                pool = {"level": co + wt, "checked_out": co, "waiting": wt, "limit": 15}
                rows.append((at, "pool", "api", f"pod-{k}", 60, pool))
                rows.append((at, "locks", "api", f"pod-{k}", 60, {"blocked_count": blocked}))
        conn = await asyncpg.connect(plain_db_url)
        try:
            await insert_rows(conn, rows)
            result = await call(client, retention.run_pass)
            assert result.service_rows >= 8  # 4 minutes x 2 series (activity: the app's own)
            again = await call(client, retention.run_pass)  # recomputed, not duplicated
            assert again.service_rows == result.service_rows
            service_rows = await conn.fetch(
                f'SELECT at, series, data FROM "{SCHEMA}".samples '
                "WHERE instance = '' AND series IN ('pool', 'locks') ORDER BY series, at"
            )
        finally:
            await conn.close()
        assert len(service_rows) == 8
        for r in service_rows:
            data = json.loads(r["data"])
            assert data["instances"] == 3
            if r["series"] == "pool":  # connections add up across the processes
                assert (data["checked_out"], data["waiting"], data["limit"]) == (9, 3, 45)
                assert data["level"] == 9
            else:  # the same server seen by each: the largest value
                assert data["blocked_count"] == 5
        for series, peak in (("pool", "peak 9"), ("locks", "peak 5")):
            chart = await client.get(f"/history/chart?series={series}&range=24h")
            assert chart.status_code == 200 and peak in chart.text, chart.text[:2000]
        points = (await history(client, "series=pool&range=24h"))["points"]
        assert points and all(p["instance"] != "" for p in points)  # instances' rows only


async def test_history_switched_off_says_so(db_url: str) -> None:
    async with AsyncTestClient(app_for(db_url, DASHBOARD_HISTORY="false")) as client:
        assert client.app.state.dashboard.history is None
        assert (await client.get("/api/history?series=disks")).status_code == 400  # still checked
        r = await client.get("/api/history?series=locks")
        assert r.status_code == 503
        assert r.json()["error"] == (
            "history unavailable: history is switched off (DASHBOARD_HISTORY=false)"
        )
        chart = await client.get("/history/chart?series=pool&range=6h")
        assert chart.status_code == 200 and "history is switched off" in chart.text
        assert (await client.get("/pool")).status_code == 200

"""Pure parts of the pool area: capacity findings, the server join, chart geometry,
histograms, origin capture, freeze-frame coalescing. No database."""

from __future__ import annotations

import asyncio.tasks
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboard.pool import capacity, origin
from dashboard.pool.chart import HistoryPoint, capacity_bar, chart
from dashboard.pool.freeze import FreezeFrame, FreezeFrames
from dashboard.pool.histogram import Histogram
from dashboard.pool.join import doing, other_backends, server_side, severity
from dashboard.server.model import LockWait, Privileges, ServerSettings, Session, Timeout
from dashboard.server.snapshot import Snapshot, assemble_snapshot

NOW = datetime(2025, 1, 1, 3, 0, 0, tzinfo=UTC)


def pool(**kw: Any) -> capacity.PoolConfig:
    base: dict[str, Any] = {
        "name": "main",
        "pool_class": "AsyncAdaptedQueuePool",
        "size": 10,
        "max_overflow": 5,
        "limit": 15,
        "timeout_s": 5.0,
        "recycle_s": 300.0,
        "pre_ping": True,
    }
    base.update(kw)
    return capacity.PoolConfig(**base)


def by_key(findings: list[capacity.Finding]) -> dict[str, capacity.Finding]:
    return {f.key: f for f in findings}


# --- capacity ---------------------------------------------------------------------------


def test_budget_over_max_connections_is_danger_with_the_arithmetic() -> None:
    server = capacity.ServerLimits(max_connections=100, superuser_reserved_connections=3)
    f = capacity.connection_budget([pool()], replicas=8, server=server, dashboard_connections=4)
    assert f.level == "danger"
    # (10+5 + 4) × 8 = 152 > 97 usable
    assert "= 152" in f.text and "97 usable" in f.text and "× 8 replicas" in f.text


def test_budget_levels() -> None:
    server = capacity.ServerLimits(max_connections=100)
    assert capacity.connection_budget([pool()], 5, server, 0).level == "ok"  # 75 <= 80
    assert capacity.connection_budget([pool()], 6, server, 0).level == "warn"  # 90 > 80
    assert capacity.connection_budget([pool()], 7, server, 0).level == "danger"  # 105 > 100
    assert capacity.connection_budget([pool()], 2, server, 0).level == "ok"  # 30
    assert capacity.connection_budget([pool()], 2, None, 0).level == "info"


def test_unlimited_pool_is_danger() -> None:
    f = capacity.connection_budget(
        [pool(pool_class="NullPool", size=None, max_overflow=None, limit=None)], 1, None, 0
    )
    assert f.level == "danger" and "no upper limit" in f.text


def test_recycle_against_idle_session_timeout() -> None:
    server = capacity.ServerLimits(max_connections=100, idle_session_timeout_ms=60_000)
    no_ping = capacity.recycle_vs_idle(pool(recycle_s=None, pre_ping=False), server)
    assert no_ping is not None and no_ping.level == "danger"
    assert "1m 00s" in no_ping.text and "off (-1)" in no_ping.text
    with_ping = capacity.recycle_vs_idle(pool(recycle_s=3600.0, pre_ping=True), server)
    assert with_ping is not None and with_ping.level == "warn"
    fine = capacity.recycle_vs_idle(pool(recycle_s=30.0), server)
    assert fine is not None and fine.level == "ok"
    off = capacity.recycle_vs_idle(
        pool(), capacity.ServerLimits(max_connections=100, idle_session_timeout_ms=0)
    )
    assert off is not None and off.level == "ok"
    assert capacity.recycle_vs_idle(pool(), None) is None


def test_pre_ping_and_timeout_findings() -> None:
    assert capacity.pre_ping(pool(pre_ping=False)).level == "warn"
    assert capacity.pre_ping(pool(pre_ping=True)).level == "ok"
    slow = capacity.pool_timeout(pool(timeout_s=30.0))
    assert slow is not None and slow.level == "warn" and "30s" in slow.title
    fast = capacity.pool_timeout(pool(timeout_s=0.5))
    assert fast is not None and fast.level == "warn"
    ok = capacity.pool_timeout(pool(timeout_s=5.0))
    assert ok is not None and ok.level == "ok"


def test_check_orders_worst_first_and_reads_sampler_settings() -> None:
    settings = ServerSettings(
        max_connections=20,
        superuser_reserved_connections=3,
        reserved_connections=0,
        timeouts={
            name: Timeout(name=name, ms=0.0, origin="built-in default")
            for name in ("idle_session_timeout", "idle_in_transaction_session_timeout")
        },
    )
    limits = capacity.server_limits_from(settings)
    assert limits is not None and limits.usable == 17
    findings = capacity.check(
        [pool(pre_ping=False, timeout_s=30.0)], replicas=1, server=limits, dashboard_connections=4
    )
    levels = [f.level for f in findings]
    assert levels == sorted(levels, key=lambda lv: ["danger", "warn", "info", "ok"].index(lv))
    keys = by_key(findings)
    assert keys["budget"].level == "danger"  # 19 > 17
    assert keys["pre_ping:main"].level == "warn"
    assert keys["idle_in_tx"].level == "info"
    assert capacity.server_limits_from(None) is None


# --- the server join --------------------------------------------------------------------


def session(
    pid: int,
    state: str | None,
    *,
    application_name: str | None = "shop",
    backend_type: str | None = "client backend",
    xact_age_s: float | None = None,
    state_age_s: float | None = None,
    query_age_s: float | None = None,
    wait_event_type: str | None = None,
    wait_event: str | None = None,
    wait: LockWait | None = None,
) -> Session:
    """A sampler `Session` record, its ages given directly (as the sampler computes them
    against the server's clock, here `NOW`)."""

    def before(age: float | None) -> datetime | None:
        return None if age is None else NOW - timedelta(seconds=age)

    return Session(
        pid=pid,
        backend_start=NOW - timedelta(hours=1),
        usename="app",
        application_name=application_name,
        client_addr="10.0.0.7",
        state=state,
        wait_event_type=wait_event_type,
        wait_event=wait_event,
        xact_start=before(xact_age_s),
        query_start=before(query_age_s),
        state_change=before(state_age_s),
        query=None,
        backend_type=backend_type,
        datname="shop",
        xact_age_s=xact_age_s,
        query_age_s=query_age_s,
        state_age_s=state_age_s,
        wait=wait,
    )


def snapshot_of(
    sessions: Iterable[Session], blocked_by: Mapping[int, list[int]] | None = None
) -> Snapshot:
    """The sampler's own assembly: sessions by pid, blocking graph and blast radius."""
    return assemble_snapshot(
        sessions, blocked_by or {}, ServerSettings(), Privileges(), taken_at=0.0, server_now=NOW
    )


def row_lock_wait(age_s: float) -> LockWait:
    return LockWait(
        locktype="tuple",
        mode="ExclusiveLock",
        relation="public.orders",
        relation_oid=16384,
        transactionid=None,
        virtualxid=None,
        objid=None,
        wait_age_s=age_s,
        wait_age_approx=False,
    )


def snapshot() -> Snapshot:
    return snapshot_of(
        [
            session(10, "idle in transaction", xact_age_s=250, state_age_s=245),
            session(
                11,
                "active",
                query_age_s=12,
                wait_event_type="Lock",
                wait_event="tuple",
                wait=row_lock_wait(12),
            ),
            session(12, "idle", state_age_s=3),
            session(20, "active", query_age_s=1),  # same app, another replica
            session(21, "idle", application_name="psql"),
            session(22, "idle", application_name=""),
            session(23, None, backend_type="autovacuum worker"),
        ],
        blocked_by={11: [10]},
    )


def test_join_describes_what_each_backend_does() -> None:
    snap = snapshot()
    holder = server_side(10, snap)
    assert holder is not None and holder.blocks == 1
    assert doing(holder) == "idle in transaction for 4m 05s; blocking 1 session"
    waiter = server_side(11, snap)
    assert waiter is not None and waiter.blocked_by == [10]
    assert waiter.wait_target == "row in public.orders"
    assert doing(waiter).startswith("waiting 12s for a lock held by pid 10")
    assert doing(server_side(12, snap)) == "idle (no transaction) for 3s"
    gone = server_side(99, snap)
    assert gone is not None and not gone.seen
    assert "not in the last" in doing(gone)
    assert server_side(10, None) is None and doing(None) == "no server snapshot yet"


def test_severity() -> None:
    snap = snapshot()
    assert severity(server_side(10, snap), 5, 60) == "danger"  # blocks others
    assert severity(server_side(12, snap), 61, 60) == "danger"  # leak
    assert severity(server_side(12, snap), 20, 60) == "warn"
    assert severity(server_side(12, snap), 1, 60) == "ok"
    idle_tx = snapshot_of([session(5, "idle in transaction")])
    assert severity(server_side(5, idle_tx), 1, 60) == "warn"


def test_other_backends_of_the_same_application() -> None:
    others = other_backends(snapshot(), {"shop"}, own_pids={10, 11, 12})
    assert others is not None
    assert others.count == 1 and others.pids == [20] and others.by_state == {"active": 1}
    unnamed = other_backends(snapshot(), {""}, own_pids=set())
    assert unnamed is not None and unnamed.count == 0
    assert other_backends(None, {"shop"}, set()) is None


# --- chart, bar, histogram --------------------------------------------------------------


def test_chart_geometry() -> None:
    now = 1000.0
    pts = [
        HistoryPoint(now - 100, 1, 0, 0),
        HistoryPoint(now - 50, 3, 4, 0),
        HistoryPoint(now - 2, 3, 2, 1),
        HistoryPoint(now - 900, 9, 9, 0),  # outside the window
    ]
    c = chart(sorted(pts, key=lambda p: p.at), now=now, window_s=300, size=2, limit=3)
    assert c["points"] == 3
    assert len(c["used"].split()) == 3
    # waiting has its own band and scale: in use is never stacked under it
    assert c["waiting_area"] and c["waiting"] and c["any_waiting"]
    assert c["y_max"] == 3 and c["wait_max"] == 4
    assert [t["n"] for t in c["timeouts"]] == ["1"]
    assert [ln["value"] for ln in c["lines"]] == ["2", "3"]
    assert c["ticks"][-1]["label"] == "now" and c["ticks"][0]["label"] == "-5m"
    for xy in c["used"].split():
        x, y = (float(v) for v in xy.split(","))
        assert 0 <= x <= c["width"] and 0 <= y <= c["height"]
    calm = chart([HistoryPoint(now - 1, 1, 0, 0)], now=now, size=2, limit=3)
    assert calm["waiting_area"] == "" and calm["waiting"] == "" and not calm["any_waiting"]
    empty = chart([], now=now, size=None, limit=None)
    assert empty["used"] == "" and empty["points"] == 0


def test_capacity_bar() -> None:
    bar = capacity_bar(size=2, limit=3, checked_out=3, checked_in=0, waiting=3)
    classes = [s["cls"] for s in bar["segments"]]
    assert classes == ["pool-seg-used", "pool-seg-overflow", "pool-seg-waiting"]
    assert abs(sum(float(s["width"]) for s in bar["segments"]) - 100.0) < 0.5
    assert bar["limit_x"] == "50.0"
    calm = capacity_bar(size=5, limit=15, checked_out=1, checked_in=2, waiting=0)
    assert [s["cls"] for s in calm["segments"]] == [
        "pool-seg-used",
        "pool-seg-idle",
        "pool-seg-free",
    ]
    assert calm["limit_x"] is None


def test_histogram() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    assert h.count == 4
    assert h.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert h.quantile(0.5) == 0.1
    assert h.quantile(1.0) == float("inf")
    assert Histogram((1.0,)).quantile(0.5) is None


# --- origin -----------------------------------------------------------------------------


def test_capture_names_this_file_and_line() -> None:
    line = sys._getframe().f_lineno + 1
    raw = origin.capture(3)
    frames = origin.resolve(raw)
    assert frames[0].filename == __file__
    assert frames[0].lineno == line
    assert frames[0].function == "test_capture_names_this_file_and_line"
    assert str(origin.origin_of(frames)).startswith("tests/test_pool_units.py:")
    assert len(frames) <= 3
    assert len(origin.capture(1)) == 2  # flat: (code, lasti)


def test_short_path() -> None:
    assert origin.short_path("/x/lib/python3.11/site-packages/sqlalchemy/a.py") == "sqlalchemy/a.py"
    assert origin.short_path(__file__) == "tests/test_pool_units.py"
    assert origin.short_path(asyncio.tasks.__file__) == "asyncio/tasks.py"


def test_request_of_a_task_inside_an_asgi_call() -> None:
    import asyncio

    async def app(scope: dict[str, Any], started: asyncio.Event, stop: asyncio.Event) -> None:
        started.set()
        await stop.wait()

    async def main() -> tuple[str | None, list[str]]:
        started, stop = asyncio.Event(), asyncio.Event()
        scope = {"type": "http", "method": "GET", "path": "/orders/7"}
        task = asyncio.create_task(app(scope, started, stop))
        await started.wait()
        found = origin.request_of(task)
        now = [f.function for f in origin.holder_now(task)]
        stop.set()
        await task
        return found, now

    found, now = asyncio.run(main())
    assert found == "GET /orders/7"
    assert any(fn.endswith("app") for fn in now)


# --- freeze-frames ----------------------------------------------------------------------


def test_freeze_frames_coalesce_and_stay_bounded() -> None:
    frames = FreezeFrames(keep=3, coalesce_s=10.0)

    def frame(pool: str, at: float) -> FreezeFrame:
        return FreezeFrame(
            id=frames.next_id(),
            pool=pool,
            at=at,
            error="QueuePool limit",
            stats={"checked_out": 3},
            connections=[],
            waiting=4,
            longest_wait_s=3.0,
        )

    frames.add(frame("main", 100.0))
    assert frames.coalesce("main", 105.0) is not None
    assert frames.coalesce("other", 105.0) is None
    assert frames.coalesce("main", 111.0) is None
    assert frames.all()[0].timeouts == 2
    for t in (200.0, 300.0, 400.0):
        frames.add(frame("main", t))
    assert [f.at for f in frames.all()] == [400.0, 300.0, 200.0]
    assert frames.get(1) is None and frames.get(4) is not None
    summary = frames.all()[0].summary()
    assert summary["at_text"].endswith("UTC") and summary["checked_out"] == 3

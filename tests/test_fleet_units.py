"""Pure parts of the fleet view: what a process publishes, grouping by service, the stale
marker, totals, and the capacity check counting the instances it sees. No database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from dashboard.history import fleet_view as fv
from dashboard.pool import capacity

AT = datetime(2025, 1, 1, 3, 0, 0, tzinfo=UTC)


def pool_json(name: str = "main", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "pool_class": "AsyncAdaptedQueuePool",
        "size": 5,
        "max_overflow": 10,
        "limit": 15,
        "timeout_s": 30.0,
        "recycle_s": None,
        "pre_ping": False,
        "checked_out": 2,
        "checked_in": 3,
        "waiting": 0,
        "longest_wait_s": 0.0,
        "timeouts_total": 0,
        "connections": [],
        "sample_interval_s": 2.0,
    }
    base.update(kw)
    return base


def report(
    service: str,
    instance: str,
    age_s: float = 1.0,
    pools: list[dict[str, Any]] | None = None,
    this: bool = False,
) -> fv.InstanceReport:
    return fv.InstanceReport(
        service=service,
        instance=instance,
        reported_at=AT,
        age_s=age_s,
        pools=tuple(pools if pools is not None else [pool_json()]),
        this_process=this,
    )


def reading(*instances: fv.InstanceReport, read_at: float = 100.0) -> fv.FleetReading:
    return fv.FleetReading(
        available=True, reason=None, instances=instances, read_at=read_at, read_wall=0.0
    )


# --- what a process publishes -----------------------------------------------------------


def test_publishable_keeps_the_api_shape_adds_settings_and_stays_bounded() -> None:
    rows = [
        {"id": i, "backend_pid": 1000 + i, "held_for_s": 1.0, "origin": "a.py:1"}
        for i in range(250)
    ]
    view = pool_json(
        connections=rows,
        history=[{"at": 1.0}],
        chart={"x": 1},
        bar={"y": 2},
        wait_time_p99_s=float("inf"),
        origin="line\x00with nul",
    )
    out = fv.publishable(view, interval_s=0.5)
    assert "history" not in out and "chart" not in out and "bar" not in out
    assert out["settings"] == {
        "size": 5,
        "max_overflow": 10,
        "pool_timeout": 30.0,
        "class": "AsyncAdaptedQueuePool",
        "limit": 15,
        "recycle_s": None,
        "pre_ping": False,
    }
    assert out["sample_interval_s"] == 0.5
    assert len(out["connections"]) == fv.MAX_PUBLISHED_CONNECTIONS
    assert out["connections_total"] == 250
    assert out["connections"][0] == rows[0]  # longest held first, as the ledger lists them
    assert out["wait_time_p99_s"] is None and out["origin"] == "linewith nul"
    json.dumps(out, allow_nan=False)  # what jsonb accepts
    assert view["history"] == [{"at": 1.0}]  # the page's own view is not changed


def test_figures_are_read_tolerantly_from_other_versions_rows() -> None:
    f = fv.PoolFigures.from_json(
        {
            "name": "x",
            "settings": {
                "size": 3,
                "max_overflow": 1,
                "limit": 4,
                "class": "QueuePool",
                "pool_timeout": 5,
            },
        }
    )
    assert (f.size, f.max_overflow, f.limit, f.pool_class, f.timeout_s) == (
        3,
        1,
        4,
        "QueuePool",
        5.0,
    )
    assert (f.checked_out, f.waiting, f.timeouts_total) == (0, 0, 0)
    junk = fv.PoolFigures.from_json({"checked_out": "many", "size": float("nan"), "waiting": True})
    assert junk.name == "?" and junk.checked_out == 0 and junk.size is None and junk.waiting == 1
    assert fv.pools_from_json({"not": "a list"}) == ()
    assert fv.pools_from_json([pool_json(), 3, "x"]) == (pool_json(),)


# --- stale marker, live window, grouping ------------------------------------------------


def test_stale_after_three_of_the_publishers_intervals() -> None:
    assert not fv.is_stale(5.9, 2.0)
    assert fv.is_stale(6.1, 2.0)
    # each instance is judged by the interval it published, else the viewer's own
    slow = report("app", "slow", age_s=20.0, pools=[pool_json(sample_interval_s=10.0)])
    fast = report("app", "fast", age_s=20.0, pools=[pool_json(sample_interval_s=2.0)])
    silent = report("app", "old-version", age_s=20.0, pools=[pool_json(sample_interval_s=None)])
    rows = {
        r.instance: r
        for r in fv.group_by_service([slow, fast, silent], default_interval_s=10.0)[0].instances
    }
    assert rows["slow"].stale is False and rows["fast"].stale is True
    assert rows["old-version"].stale is False  # 20 s <= 3 × 10 s (the viewer's interval)


def test_live_instances_put_this_process_live_and_age_the_cached_reading() -> None:
    this = report("shop", "a", age_s=0.0, pools=[pool_json(checked_out=4)], this=True)
    own_row = report("shop", "a", age_s=3.0, pools=[pool_json(checked_out=1)])
    other = report("shop", "b", age_s=10.0)
    almost_gone = report("billing", "x", age_s=55.0)
    got = fv.live_instances(
        reading(own_row, other, almost_gone, read_at=100.0), this, now_mono=106.0
    )
    # 55 s + 6 s since the read: out of the one-minute window
    assert [(i.service, i.instance) for i in got] == [("shop", "a"), ("shop", "b")]
    a, b = got
    assert a.this_process and a.figures()[0].checked_out == 4  # the live pools, not the row
    assert b.age_s == 16.0
    # 5 s after the read it was still inside the window
    kept = fv.live_instances(reading(almost_gone, read_at=100.0), this, now_mono=105.0)
    assert [i.instance for i in kept] == ["x", "a"]

    unavailable = fv.FleetReading(False, "down", (other,), 100.0, 0.0)
    assert fv.live_instances(unavailable, this, now_mono=100.0) == [this]
    assert fv.live_instances(None, this, now_mono=100.0) == [this]


def test_grouped_by_service_with_totals_this_process_first() -> None:
    this = report("shop", "shop-b", pools=[pool_json(checked_out=1, checked_in=2)], this=True)
    a = report(
        "shop",
        "shop-a",
        age_s=30.0,
        pools=[
            pool_json(checked_out=5, waiting=2, timeouts_total=3),
            pool_json("ro", limit=None, pool_class="NullPool", checked_out=1),
        ],
    )
    w = report("worker", "w-1", pools=[pool_json(checked_out=7, checked_in=0, limit=8)])
    groups = fv.group_by_service([w, a, this], default_interval_s=2.0)
    assert [g.service for g in groups] == ["shop", "worker"]  # this process's service first
    shop, worker = groups
    assert [r.instance for r in shop.instances] == ["shop-b", "shop-a"]
    assert shop.instances[0].this_process and not shop.instances[0].stale
    assert shop.instances[1].stale and shop.stale == 1
    assert shop.totals == fv.Totals(
        instances=2, pools=3, in_use=7, idle=8, waiting=2, timeouts=3, limit=None
    )
    assert worker.totals.limit == 8 and worker.totals.in_use == 7 and worker.stale == 0
    assert shop.instances[1].totals.waiting == 2


def test_instances_json_has_the_design_fields() -> None:
    this = report("shop", "a", age_s=0.0, this=True)
    old = report("shop", "b", age_s=40.0)
    body = fv.instances_json([old, this], default_interval_s=2.0)
    assert [(i["service"], i["instance"], i["stale"], i["this_process"]) for i in body] == [
        ("shop", "a", False, True),
        ("shop", "b", True, False),
    ]
    assert body[0]["reported_at"] == AT.isoformat()
    assert body[1]["pools"][0]["name"] == "main" and body[1]["age_s"] == 40.0


def test_unavailable_reasons() -> None:
    assert fv.unavailable_reason(None, configured=False) is not None
    assert "first report" in (fv.unavailable_reason(None, configured=True) or "")
    down = fv.FleetReading(False, "the shared state is unavailable (refused)", (), 0.0, 0.0)
    assert fv.unavailable_reason(down, configured=True) == down.reason
    assert fv.unavailable_reason(reading(), configured=True) is None
    # a reading older than the live window says nothing about who is live now
    fresh = reading(read_at=100.0)
    assert fv.unavailable_reason(fresh, configured=True, now_mono=150.0) is None
    old = fv.unavailable_reason(fresh, configured=True, now_mono=190.0)
    assert old == "the shared state was last read 90 s ago (no sampler cycle since)"


# --- capacity from the instances seen ---------------------------------------------------


def test_capacity_counts_every_live_instance_of_every_service() -> None:
    shop = [pool_json(size=2, max_overflow=1, limit=3)]
    members = fv.fleet_members(
        [
            report("shop", "a", pools=shop, this=True),
            report("shop", "b", pools=shop),
            report("billing", "x", pools=[pool_json(size=4, max_overflow=0, limit=4)]),
        ]
    )
    server = capacity.ServerLimits(max_connections=100)
    f = capacity.connection_budget([], 1, server, 2, fleet=members)
    # shop: 2 × (3 + 2) + billing: 1 × (4 + 2) = 16
    assert f.source == "fleet" and f.level == "ok"
    assert "= 16" in f.text
    assert "shop 2 × (main 2+1 + 2 for the dashboard)" in f.text
    assert "billing 1 × (main 4+0 + 2 for the dashboard)" in f.text
    assert "3 live instances of 2 services" in f.text and "DASHBOARD_REPLICAS is not used" in f.text
    tight = capacity.connection_budget(
        [], 1, capacity.ServerLimits(max_connections=15), 2, fleet=members
    )
    assert tight.level == "danger" and "16 >" in tight.text
    # check() passes the fleet through to the budget and puts the worst first
    findings = capacity.check(
        [m.pools[0] for m in members[:1]], replicas=9, server=server, fleet=members
    )
    (budget,) = [x for x in findings if x.key == "budget"]
    assert budget.source == "fleet" and budget.to_json()["source"] == "fleet"
    assert "× 9" not in budget.text


def test_capacity_names_an_unlimited_pool_of_another_instance() -> None:
    members = fv.fleet_members(
        [
            report("shop", "a", this=True),
            report(
                "jobs",
                "j-1",
                pools=[
                    pool_json(
                        "bulk", pool_class="NullPool", size=None, max_overflow=None, limit=None
                    )
                ],
            ),
        ]
    )
    f = capacity.connection_budget([], 1, None, 0, fleet=members)
    assert f.level == "danger" and "jobs/j-1 bulk" in f.text and f.source == "fleet"


def test_capacity_falls_back_to_replicas_and_says_why() -> None:
    mine = [fv.PoolFigures.from_json(pool_json(size=10, max_overflow=5, limit=15)).config()]
    server = capacity.ServerLimits(max_connections=100)
    f = capacity.connection_budget(
        mine,
        3,
        server,
        4,
        fleet=None,
        fleet_unavailable="the shared state is unavailable (refused)",
    )
    assert f.source == "replicas" and "× 3 replicas = 57" in f.text
    assert "Counted from DASHBOARD_REPLICAS=3 because the fleet view is unavailable" in f.text
    assert "(the shared state is unavailable (refused))" in f.text
    plain = capacity.connection_budget(mine, 1, server, 0)
    assert plain.text.endswith("Counted from DASHBOARD_REPLICAS=1.")

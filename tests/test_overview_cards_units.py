"""Pure decisions behind the Overview cards and the Pool page (no database): card states
(ok / warn / alarm / unknown), connections stuck in a lock pile-up, sample times, the
pool chart's geometry (waiting apart from in use, the "now" label inside the picture),
the honest reading of the wait histogram and the list of waiters."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dashboard.pool import origin
from dashboard.pool.card import PoolFigures, PoolVerdict, Stuck, pool_verdict, stuck_in_pileup
from dashboard.pool.chart import (
    HEIGHT,
    PAD_RIGHT,
    USED_BOTTOM,
    USED_TOP,
    WAIT_BOTTOM,
    WAIT_TOP,
    WIDTH,
    HistoryPoint,
    chart,
)
from dashboard.pool.histogram import Histogram
from dashboard.pool.view import bucket_text, histogram_json, quantile_text
from dashboard.pool.waiter import waiter_rows
from dashboard.server.cards import (
    SampleTime,
    age_text,
    locks_verdict,
    schema_state,
    server_unknown,
    worst,
)


def figures(**kw: object) -> PoolFigures:
    base: dict[str, object] = {
        "name": "main",
        "checked_out": 0,
        "limit": 15,
        "waiting": 0,
        "longest_wait_s": 0.0,
        "timeouts_total": 0,
        "last_timeout_age_s": None,
        "leak_suspects": 0,
    }
    base.update(kw)
    return PoolFigures(**base)  # type: ignore[arg-type]


NOT_STUCK = Stuck()


def verdict(
    f: PoolFigures, stuck: Stuck | None = NOT_STUCK, down: str | None = None
) -> PoolVerdict:
    return pool_verdict(
        f,
        stuck=stuck,
        database_down=down,
        server_unknown=None if stuck is not None else "no server sample taken yet",
        leak_threshold_s=60.0,
    )


# --- stuck in a pile-up -------------------------------------------------------------------


def test_stuck_counts_waiters_and_roots_among_checked_out_pids() -> None:
    # 101 holds the lock (root), 102..105 wait behind it, 200 waits on 105 (chain);
    # 300 is checked out and idle; 999 waits but is not one of ours.
    blocked_by = {102: [101], 103: [101], 104: [101], 105: [101], 200: [105], 999: [101]}
    blast = {101: 6, 105: 1}
    s = stuck_in_pileup([101, 102, 103, 104, 105, 300, None], blocked_by, blast)
    assert s.waiting == (102, 103, 104, 105)  # 105 both waits and blocks: counted once
    assert s.blocking == (101,)
    assert s.total == 5
    assert s.to_json() == {
        "total": 5,
        "waiting_on_lock": [102, 103, 104, 105],
        "blocking_others": [101],
    }
    assert stuck_in_pileup([300, 301], blocked_by, blast).total == 0
    assert stuck_in_pileup([], {}, {}).total == 0


# --- the Pool card --------------------------------------------------------------------------


def test_pool_card_is_not_green_while_connections_are_stuck() -> None:
    v = verdict(figures(checked_out=5, limit=7), Stuck((2, 3, 4, 5), (1,)))
    assert v.state == "warn"
    assert v.headline == "5 of 7 in use, 5 stuck in a lock pile-up"
    assert "4 waiting for a lock · 1 holding a lock others wait for" in v.notes
    full = verdict(figures(checked_out=7, limit=7), Stuck((2, 3), (1,)))
    assert full.state == "alarm"


def test_pool_card_states() -> None:
    calm = verdict(figures(checked_out=2))
    assert calm.state == "ok"
    assert calm.headline == "connections available · 2 of 15 in use"
    waiting = verdict(figures(checked_out=15, waiting=3, longest_wait_s=2.0))
    assert waiting.state == "alarm"
    assert waiting.headline.startswith("3 waiting for a connection")
    full = verdict(figures(checked_out=15))
    assert full.state == "warn" and "every connection in use" in full.headline
    recent = verdict(figures(timeouts_total=4, last_timeout_age_s=30.0))
    assert recent.state == "warn"
    assert "last pool timeout 30s ago" in recent.notes
    old = verdict(figures(timeouts_total=4, last_timeout_age_s=3600.0))
    assert old.state == "ok"
    leak = verdict(figures(checked_out=1, leak_suspects=1))
    assert leak.state == "warn"
    unbounded = verdict(figures(checked_out=3, limit=None))
    assert unbounded.headline == "connections available · 3 in use"


def test_pool_card_with_the_database_down_is_unknown_never_green() -> None:
    v = verdict(figures(checked_out=0), None, down="connection refused")
    assert v.state == "unknown"
    assert v.headline == "unknown — database unreachable"
    assert v.detail == "connection refused"
    # callers queued for a connection are an alarm whatever else is true, and say why
    w = verdict(figures(checked_out=15, waiting=2), None, down="connection refused")
    assert w.state == "alarm"
    assert "database unreachable: connection refused" in w.notes


def test_pool_card_without_a_lock_sample() -> None:
    # nothing checked out: nothing can be stuck, the card may be green
    assert verdict(figures(checked_out=0), None).state == "ok"
    # connections held and no trustworthy lock sample: neutral, with the reason
    v = verdict(figures(checked_out=3), None)
    assert v.state == "unknown"
    assert v.headline == "3 of 15 in use · lock state unknown"
    assert v.notes[0] == "lock state unknown: no server sample taken yet"


# --- the Locks card, the Schema card, shared helpers ------------------------------------------


def test_locks_card_states() -> None:
    quiet = {"idle_in_transaction_count": 0, "long_running_count": 0, "warnings": 0}
    assert locks_verdict(unknown=None, blocked_count=0, **quiet).state == "ok"
    pile = locks_verdict(unknown=None, blocked_count=4, **quiet)
    assert (pile.state, pile.headline) == ("alarm", "4 waiting on locks")
    idle = locks_verdict(
        unknown=None,
        blocked_count=0,
        idle_in_transaction_count=2,
        long_running_count=0,
        warnings=0,
    )
    assert idle.state == "warn"
    down = locks_verdict(unknown="database unreachable: refused", blocked_count=0, **quiet)
    assert (down.state, down.headline) == ("unknown", "unknown — database unreachable")
    assert down.detail == "refused"
    stale = locks_verdict(unknown="no server sample taken yet", blocked_count=3, **quiet)
    assert (stale.state, stale.headline, stale.detail) == (
        "unknown",
        "unknown — no server sample taken yet",
        None,
    )


def test_server_sample_trust() -> None:
    now = 1000.0
    ok = {"database_reason": "", "sampler_error": None, "stale": False, "now": now}
    assert server_unknown(database_ok=True, sample_at=999.0, **ok) is None  # type: ignore[arg-type]
    assert server_unknown(database_ok=None, sample_at=999.0, **ok) is None  # type: ignore[arg-type]
    assert (
        server_unknown(
            database_ok=False,
            database_reason="connection refused",
            sampler_error="also failing",
            sample_at=999.0,
            stale=False,
            now=now,
        )
        == "database unreachable: connection refused"
    )
    assert server_unknown(
        database_ok=True,
        database_reason="",
        sampler_error="permission denied for pg_locks",
        sample_at=999.0,
        stale=False,
        now=now,
    ) == ("server sampling failing: permission denied for pg_locks")
    assert server_unknown(database_ok=True, sample_at=None, **ok) == "no server sample taken yet"  # type: ignore[arg-type]
    stale = server_unknown(
        database_ok=True,
        database_reason="",
        sampler_error=None,
        sample_at=now - 45,
        stale=True,
        now=now,
    )
    assert stale == "the last server sample is from 45 s ago"


def test_worst_schema_and_sample_times() -> None:
    assert worst([]) == "ok"
    assert worst(["ok", "warn"]) == "warn"
    assert worst(["warn", "unknown"]) == "unknown"
    assert worst(["unknown", "alarm", "ok"]) == "alarm"
    assert schema_state(None) == "unknown"
    assert schema_state("up_to_date") == "ok"
    assert schema_state("pending") == "warn"
    assert schema_state("diverged") == "alarm"
    assert schema_state("up_to_date", script_errors=1) == "alarm"
    assert age_text(1.23) == "1.2 s ago"
    assert age_text(45) == "45 s ago"
    assert age_text(600) == "10 min ago"
    at = time.time() - 1.2
    t = SampleTime(at=at, age_s=1.2)
    assert t.text.startswith("sampled 1.2 s ago (at ") and t.text.endswith(" UTC)")
    assert SampleTime(at=at, age_s=0.0, live=True).text.startswith("live, read at ")
    assert t.to_json()["age_s"] == 1.2


# --- the Pool page chart --------------------------------------------------------------------


def _xy(points: str) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in (p.split(",") for p in points.split())]


def test_chart_draws_waiting_apart_from_in_use() -> None:
    now = 1000.0
    pts = [
        HistoryPoint(now - 200, 2, 0, 0),
        HistoryPoint(now - 100, 3, 6, 0),
        HistoryPoint(now - 1, 3, 1, 1),
    ]
    c = chart(pts, now=now, window_s=300, size=2, limit=3)
    used = _xy(c["used"]) + _xy(c["used_area"])
    waiting = _xy(c["waiting"]) + _xy(c["waiting_area"])
    assert used and waiting
    # every in-use coordinate in the top panel, every waiting one in the band below
    assert all(USED_TOP <= y <= USED_BOTTOM for _, y in used)
    assert all(WAIT_TOP <= y <= WAIT_BOTTOM for _, y in waiting)
    assert USED_BOTTOM < WAIT_TOP
    # in use is on its own scale (the pool limit), not lifted by the queue
    assert c["y_max"] == 3 and c["wait_max"] == 6
    assert float(c["base_y"]) == USED_BOTTOM and float(c["wait_base_y"]) == WAIT_BOTTOM
    # both bands carry a title (the unit) above their plot
    assert 0 < c["used_title_y"] < USED_TOP and USED_BOTTOM < c["wait_title_y"] < WAIT_TOP
    # y-axis numbers never overlap
    ys = sorted(float(lbl["y"]) for lbl in c["y_labels"])
    assert all(b - a >= 14 for a, b in zip(ys, ys[1:], strict=False))
    assert {lbl["value"] for lbl in c["y_labels"]} >= {"0", "3"}


def test_chart_now_label_stays_inside_the_picture() -> None:
    c = chart([HistoryPoint(999.0, 1, 0, 0)], now=1000.0, window_s=300, size=5, limit=15)
    first, last = c["ticks"][0], c["ticks"][-1]
    assert last["label"] == "now" and last["anchor"] == "end"
    assert float(last["x"]) == WIDTH - PAD_RIGHT  # the text ends at the plot's right edge
    assert first["anchor"] == "start" and float(first["x"]) >= 0
    assert all(t["anchor"] == "middle" for t in c["ticks"][1:-1])
    assert c["tick_y"] < HEIGHT
    assert not c["any_waiting"] and c["waiting_area"] == ""


# --- the wait histogram, read honestly ---------------------------------------------------------


def test_histogram_quantile_is_a_bucket_not_a_value() -> None:
    h = Histogram((0.0005, 0.001, 2.5, 5.0))
    for _ in range(95):
        h.observe(0.0001)
    for _ in range(5):
        h.observe(4.0)
    assert h.quantile(0.99) == 5.0
    assert h.quantile_bucket(0.99) == (2.5, 5.0)
    assert quantile_text(h, 0.99) == "between 2.5 s and 5 s"
    assert quantile_text(h, 0.5) == "at most 0.5 ms"
    rows = histogram_json(h)
    assert [r["label"] for r in rows] == [
        "up to 0.5 ms",
        "0.5 ms – 1 ms",
        "1 ms – 2.5 s",
        "2.5 s – 5 s",
    ]
    assert [r["count"] for r in rows] == [95, 0, 0, 5]
    assert rows[-1]["share"] == 0.05 and rows[-1]["upper_s"] == 5.0
    h.observe(60.0)
    assert histogram_json(h)[-1]["label"] == "over 5 s"
    assert histogram_json(h)[-1]["upper_s"] is None
    assert quantile_text(Histogram((1.0,)), 0.99) is None
    assert bucket_text(0.0, 0.0005) == "up to 0.5 ms"


# --- waiters --------------------------------------------------------------------------------------


def test_waiter_rows_name_task_origin_and_since() -> None:
    async def main() -> list[dict[str, object]]:
        async def handler() -> Any:
            # what the instrument records for a queued caller: token, queued at, wait,
            # task, thread, stack (one C call in production)
            return origin.checkout_entry(7, time.monotonic() - 2.0, 0.0, 12)

        task = asyncio.create_task(handler(), name="GET /orders")
        raw = await task
        rows = waiter_rows([raw], now_wall=time.time())
        del task
        return rows

    rows = asyncio.run(main())
    assert len(rows) == 1
    row = rows[0]
    assert row["id"] == 7
    assert row["task"] == "GET /orders"
    assert str(row["origin"]).startswith("tests/test_overview_cards_units.py:")
    assert 1.9 <= float(row["waited_s"]) <= 10  # type: ignore[arg-type]
    assert str(row["waiting_since_text"]).endswith(" UTC")

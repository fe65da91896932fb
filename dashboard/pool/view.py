"""Ledger entries and pool counters as JSON-ready dicts (shared by pages, API, frames)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from dashboard.pool.histogram import Histogram
from dashboard.pool.instrument import LedgerEntry, PoolStats
from dashboard.pool.join import doing, server_side, severity
from dashboard.server.snapshot import Snapshot


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def clock(ts: float | None) -> str:
    """23:14:05 UTC (the date too when it is not today)."""
    if not ts:
        return "–"
    dt = datetime.fromtimestamp(ts, UTC)
    if dt.date() != datetime.now(UTC).date():
        return dt.strftime("%Y-%m-%d %H:%M:%S UTC")
    return dt.strftime("%H:%M:%S UTC")


def connection_row(
    entry: LedgerEntry,
    snapshot: Snapshot | None,
    *,
    leak_threshold_s: float,
    now_mono: float | None = None,
    with_stack: bool = False,
) -> dict[str, Any]:
    held = entry.held_for(now_mono if now_mono is not None else time.monotonic())
    o = entry.origin()
    side = server_side(entry.backend_pid, snapshot)
    row: dict[str, Any] = {
        "id": entry.seq,
        "backend_pid": entry.backend_pid,
        "held_for_s": round(held, 3),
        "checked_out_at": iso(time.time() - held),
        "origin": str(o) if o else None,
        "origin_frame": o.to_json() if o else None,
        "origin_is_live": entry.origin_is_live,
        "task": entry.task_name,
        "thread": entry.thread,
        "request": entry.request(),
        "in_transaction": entry.in_transaction(),
        "checkout_wait_s": round(entry.wait_s, 6),
        "leak_suspect": held >= leak_threshold_s,
        "server": side.to_json() if side else None,
        "doing": doing(side),
        "severity": severity(side, held, leak_threshold_s),
    }
    if with_stack:
        row["stack"] = [f.to_json() for f in entry.frames()]
    return row


def rejoin(rows: list[dict[str, Any]], snapshot: Snapshot | None, leak_threshold_s: float) -> None:
    """Fill the server side of rows captured earlier (freeze-frames), in place."""
    for row in rows:
        side = server_side(row.get("backend_pid"), snapshot)
        row["server"] = side.to_json() if side else None
        row["doing"] = doing(side)
        row["severity"] = severity(side, float(row.get("held_for_s") or 0.0), leak_threshold_s)


def short_seconds(v: float | None) -> str | None:
    """0.5 ms, 25 ms, 2.5 s, inf (bucket bounds, for display)."""
    if v is None:
        return None
    if v == float("inf"):
        return "more than the largest bucket"
    return f"{v * 1000:g} ms" if v < 1 else f"{v:g} s"


def bucket_text(lower: float, upper: float) -> str:
    """A histogram bucket for people: up to 0.5 ms, 2.5 s – 5 s, over 60 s."""
    if upper == float("inf"):
        return f"over {short_seconds(lower)}"
    if lower <= 0:
        return f"up to {short_seconds(upper)}"
    return f"{short_seconds(lower)} – {short_seconds(upper)}"


def quantile_text(hist: Histogram, q: float) -> str | None:
    """What the histogram can honestly say about a quantile: the bucket it falls in."""
    span = hist.quantile_bucket(q)
    if span is None:
        return None
    lower, upper = span
    if upper == float("inf"):
        return f"over {short_seconds(lower)}"
    if lower <= 0:
        return f"at most {short_seconds(upper)}"
    return f"between {short_seconds(lower)} and {short_seconds(upper)}"


def histogram_json(hist: Histogram) -> list[dict[str, Any]]:
    total = hist.count
    return [
        {
            "lower_s": b.lower,
            "upper_s": None if b.upper == float("inf") else b.upper,
            "count": b.count,
            "share": round(b.count / total, 6) if total else 0.0,
            "label": bucket_text(b.lower, b.upper),
        }
        for b in hist.buckets()
    ]


def stats_json(s: PoolStats) -> dict[str, Any]:
    return {
        "name": s.name,
        "pool_class": s.pool_class,
        "size": s.size,
        "max_overflow": s.max_overflow,
        "limit": s.limit,
        "checked_in": s.checked_in,
        "checked_out": s.checked_out,
        "overflow": s.overflow,
        "waiting": s.waiting,
        "connecting": s.connecting,
        "longest_wait_s": round(s.longest_wait_s, 3),
        "timeouts_total": s.timeouts_total,
        "checkouts_total": s.checkouts_total,
        "connects_total": s.connects_total,
        "closes_total": s.closes_total,
        "invalidations_total": s.invalidations_total,
        "checkout_errors_total": s.checkout_errors_total,
        "instrumentation_errors_total": s.errors_total,
        "peak_checked_out": s.peak_checked_out,
        "peak_waiting": s.peak_waiting,
        "last_timeout_at": iso(s.last_timeout_at),
        "untracked_checked_out": s.untracked_checked_out,
        "timeout_s": s.timeout_s,
        "recycle_s": s.recycle_s,
        "pre_ping": s.pre_ping,
        "wait_time_p50_s": s.wait.quantile(0.5),
        # a histogram bucket's upper bound (Prometheus-style), not a measured quantile
        "wait_time_p99_s": s.wait.quantile(0.99),
        "wait_time_p99_text": quantile_text(s.wait, 0.99),
        "wait_histogram": histogram_json(s.wait),
        "counting_since": iso(s.counting_since),
        "counting_since_text": clock(s.counting_since),
        "wait_time_count": s.wait.count,
        "wait_time_sum_s": round(s.wait.sum, 6),
    }

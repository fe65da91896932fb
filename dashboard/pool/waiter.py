"""Callers waiting for a connection right now, for reading (the Pool page, `/api/pool`).

The instrument records, for each queued caller only, a raw tuple (see
`PoolInstrument.waiting_raw`): token, monotonic time it queued, task reference, thread
name, stack. Everything readable (task name, code origin, the request it serves) is
worked out here, when someone looks.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from dashboard.pool import origin
from dashboard.pool.instrument import RawEntry
from dashboard.pool.view import clock

MAX_LISTED = 50  # waiters shown (and published) per pool; the count is always complete


def waiter_rows(
    raw: list[RawEntry],
    *,
    now_mono: float | None = None,
    now_wall: float | None = None,
    limit: int = MAX_LISTED,
) -> list[dict[str, Any]]:
    """JSON-ready rows, longest waiting first, at most `limit` of them."""
    mono = now_mono if now_mono is not None else time.monotonic()
    wall = now_wall if now_wall is not None else time.time()
    rows = []
    for token, queued_mono, _wait, task_ref, thread, stack in sorted(raw, key=lambda r: r[1])[
        :limit
    ]:
        task = task_ref() if task_ref is not None else None
        frames = origin.resolve(stack) if stack else []
        where = origin.origin_of(frames) if frames else origin.live_origin(task)
        waited = max(0.0, mono - queued_mono)
        since = wall - waited
        rows.append(
            {
                "id": token,
                "task": task.get_name() if task is not None else None,
                "thread": thread,
                "origin": str(where) if where else None,
                "origin_frame": where.to_json() if where else None,
                "request": origin.request_of(task),
                "waiting_since": datetime.fromtimestamp(since, UTC).isoformat(),
                "waiting_since_text": clock(since),
                "waited_s": round(waited, 3),
            }
        )
    return rows

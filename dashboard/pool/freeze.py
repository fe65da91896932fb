"""Freeze-frames: what the pool and the server looked like when a checkout timed out.

The in-process half (counters, ledger, waiters) is copied synchronously at the moment of
the timeout; the server half (activity, locks) is filled in right after by one sampler
cycle on the diagnostics engine. Timeouts within `coalesce_s` of a frame are counted on
that frame instead of taking a new one: fifty waiters timing out together are one event.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from dashboard.pool.view import clock, iso


@dataclass
class FreezeFrame:
    id: int
    pool: str
    at: float  # wall clock of the first timeout
    error: str
    stats: dict[str, Any]
    connections: list[dict[str, Any]]
    waiting: int
    longest_wait_s: float
    timeouts: int = 1
    last_timeout_at: float = 0.0
    server: dict[str, Any] | None = None  # {"taken_at", "activity", "locks"}
    server_error: str | None = None
    complete: bool = False
    notes: list[str] = field(default_factory=list)
    # who was queued for a connection at that moment (dashboard/pool/waiter.py rows)
    waiters: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pool": self.pool,
            "at": self.at,
            "at_iso": iso(self.at),
            "at_text": clock(self.at),
            "error": self.error,
            "timeouts": self.timeouts,
            "last_timeout_at": self.last_timeout_at,
            "checked_out": self.stats.get("checked_out"),
            "waiting": self.waiting,
            "longest_wait_s": round(self.longest_wait_s, 3),
            "connections": len(self.connections),
            "server_sampled": self.server is not None,
            "complete": self.complete,
        }

    def to_json(self) -> dict[str, Any]:
        body = self.summary()
        body.update(
            {
                "stats": self.stats,
                "connections_detail": self.connections,
                "server": self.server,
                "server_error": self.server_error,
                "notes": list(self.notes),
                "waiters": self.waiters,
            }
        )
        return body


class FreezeFrames:
    """The last few frames, newest first. Safe to append from a pool thread."""

    def __init__(self, keep: int = 10, coalesce_s: float = 10.0) -> None:
        self.keep = keep
        self.coalesce_s = coalesce_s
        self._frames: deque[FreezeFrame] = deque(maxlen=keep)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def coalesce(self, pool: str, now: float) -> FreezeFrame | None:
        """Count this timeout on a recent frame of the same pool, if there is one."""
        with self._lock:
            for f in self._frames:
                if f.pool == pool and now - f.at < self.coalesce_s:
                    f.timeouts += 1
                    f.last_timeout_at = now
                    return f
        return None

    def next_id(self) -> int:
        return next(self._ids)

    def add(self, frame: FreezeFrame) -> None:
        with self._lock:
            self._frames.appendleft(frame)

    def all(self) -> list[FreezeFrame]:
        with self._lock:
            return list(self._frames)

    def get(self, frame_id: int) -> FreezeFrame | None:
        for f in self.all():
            if f.id == frame_id:
                return f
        return None

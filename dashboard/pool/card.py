"""The Pool card of the Overview page, decided from plain values (pure, no I/O).

The pool's counts are live (in process); whether its checked-out connections are stuck
in a lock pile-up comes from joining their backend pids with the server sampler's lock
graph (`Snapshot.blocked_by`, `Snapshot.blast_radius`). The card is never green while a
connection is stuck there, nor while the database is unreachable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dashboard.formatting import duration
from dashboard.server.cards import CardState

RECENT_TIMEOUT_S = 300.0  # a pool timeout this recent keeps the card amber


@dataclass(frozen=True)
class Stuck:
    """Checked-out connections caught in a lock pile-up, by backend pid."""

    waiting: tuple[int, ...] = ()  # waiting for a lock
    blocking: tuple[int, ...] = ()  # not waiting, but others wait behind them (roots)

    @property
    def total(self) -> int:
        return len(self.waiting) + len(self.blocking)

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "waiting_on_lock": list(self.waiting),
            "blocking_others": list(self.blocking),
        }


def stuck_in_pileup(
    pids: Iterable[int | None],
    blocked_by: Mapping[int, Sequence[int]],
    blast_radius: Mapping[int, int],
) -> Stuck:
    """Which of these backends wait for a lock, or hold one that others wait for."""
    waiting: list[int] = []
    blocking: list[int] = []
    for pid in sorted({p for p in pids if p is not None}):
        if blocked_by.get(pid):
            waiting.append(pid)
        elif blast_radius.get(pid, 0) > 0:
            blocking.append(pid)
    return Stuck(tuple(waiting), tuple(blocking))


@dataclass(frozen=True)
class PoolFigures:
    name: str
    checked_out: int
    limit: int | None
    waiting: int
    longest_wait_s: float
    timeouts_total: int
    last_timeout_age_s: float | None  # seconds since the last pool timeout
    leak_suspects: int


@dataclass(frozen=True)
class PoolVerdict:
    state: CardState
    headline: str
    notes: tuple[str, ...] = field(default_factory=tuple)  # what else is true, worst first
    detail: str | None = None  # the reason behind an unknown headline


def in_use_text(f: PoolFigures) -> str:
    return f"{f.checked_out} of {f.limit} in use" if f.limit else f"{f.checked_out} in use"


def pool_verdict(
    f: PoolFigures,
    *,
    stuck: Stuck | None,
    database_down: str | None,
    server_unknown: str | None,
    leak_threshold_s: float,
) -> PoolVerdict:
    """`stuck` None: the lock state is not known (`server_unknown` says why);
    `database_down`: the reachability probe's reason when the database is unreachable."""
    notes: list[str] = []
    n_stuck = stuck.total if stuck is not None else 0
    stuck_text = f"{n_stuck} stuck in a lock pile-up" if n_stuck else ""
    if stuck is not None and n_stuck:
        parts = []
        if stuck.waiting:
            parts.append(f"{len(stuck.waiting)} waiting for a lock")
        if stuck.blocking:
            parts.append(f"{len(stuck.blocking)} holding a lock others wait for")
        notes.append(" · ".join(parts))
    if f.timeouts_total and f.last_timeout_age_s is not None:
        if f.last_timeout_age_s <= RECENT_TIMEOUT_S:
            notes.append(f"last pool timeout {duration(f.last_timeout_age_s)} ago")
    if f.leak_suspects:
        notes.append(f"{f.leak_suspects} held longer than {duration(leak_threshold_s)}")
    full = bool(f.limit) and f.checked_out >= (f.limit or 0)

    if f.waiting:
        head = f"{f.waiting} waiting for a connection · {in_use_text(f)}"
        if stuck_text:
            head += f", {stuck_text}"
        if database_down:
            notes.insert(0, f"database unreachable: {database_down}")
        return PoolVerdict("alarm", head, tuple(notes))
    if database_down:
        return PoolVerdict(
            "unknown", "unknown — database unreachable", tuple(notes), detail=database_down
        )
    if n_stuck:
        state: CardState = "alarm" if full else "warn"
        return PoolVerdict(state, f"{in_use_text(f)}, {stuck_text}", tuple(notes))
    if full:
        return PoolVerdict("warn", f"every connection in use ({in_use_text(f)})", tuple(notes))
    if stuck is None and f.checked_out:
        # in-process counts are fine, but whether the held connections are stuck is unknown
        notes.insert(0, f"lock state unknown: {server_unknown or 'no server sample'}")
        return PoolVerdict("unknown", f"{in_use_text(f)} · lock state unknown", tuple(notes))
    recent_timeout = (
        f.timeouts_total > 0
        and f.last_timeout_age_s is not None
        and f.last_timeout_age_s <= RECENT_TIMEOUT_S
    )
    if recent_timeout or f.leak_suspects:
        return PoolVerdict("warn", f"connections available · {in_use_text(f)}", tuple(notes))
    return PoolVerdict("ok", f"connections available · {in_use_text(f)}", tuple(notes))

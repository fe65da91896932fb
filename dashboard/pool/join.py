"""The headline join: each checked-out connection next to what its server backend is doing.

Pure functions over plain values: ledger rows (from the instrument) and the server
sampler's `Snapshot` (dashboard/server/snapshot.py: `.sessions` {pid: Session},
`.blocked_by`, `.blast_radius`), read through its real types so mypy sees any drift. No
I/O; unit-tested without a database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dashboard.formatting import duration, truncate_query
from dashboard.server.snapshot import Snapshot


@dataclass
class ServerSide:
    """What pg_stat_activity and the blocking tree say about one backend."""

    seen: bool
    state: str | None = None
    xact_age_s: float | None = None
    state_age_s: float | None = None
    query_age_s: float | None = None
    wait_event_type: str | None = None
    wait_event: str | None = None
    query: str | None = None
    blocked_by: list[int] = field(default_factory=list)
    blocks: int = 0  # sessions waiting behind it, directly or transitively
    wait_target: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "state": self.state,
            "xact_age_s": _r(self.xact_age_s),
            "state_age_s": _r(self.state_age_s),
            "query_age_s": _r(self.query_age_s),
            "wait_event_type": self.wait_event_type,
            "wait_event": self.wait_event,
            "query": truncate_query(self.query, 1000),
            "blocked_by": list(self.blocked_by),
            "blocks": self.blocks,
            "wait_target": self.wait_target,
        }


def server_side(pid: int | None, snapshot: Snapshot | None) -> ServerSide | None:
    """None when there is no snapshot; `seen=False` when the pid is not in it."""
    if snapshot is None or pid is None:
        return None
    s = snapshot.sessions.get(pid)
    if s is None:
        return ServerSide(seen=False)
    target = None
    if s.wait is not None:
        try:
            target = s.wait.target()
        except Exception:
            target = None
    return ServerSide(
        seen=True,
        state=s.state,
        xact_age_s=s.xact_age_s,
        state_age_s=s.state_age_s,
        query_age_s=s.query_age_s,
        wait_event_type=s.wait_event_type,
        wait_event=s.wait_event,
        query=s.query,
        blocked_by=list(snapshot.blocked_by.get(pid, [])),
        blocks=int(snapshot.blast_radius.get(pid, 0)),
        wait_target=target,
    )


def doing(side: ServerSide | None) -> str:
    """What the backend is doing, in words, for the person on call."""
    if side is None:
        return "no server snapshot yet"
    if not side.seen:
        return "backend not in the last pg_stat_activity sample"
    parts: list[str] = []
    if side.blocked_by:
        pids = ", ".join(str(p) for p in side.blocked_by)
        what = f" ({side.wait_target})" if side.wait_target else ""
        parts.append(f"waiting {duration(side.query_age_s)} for a lock held by pid {pids}{what}")
    elif side.state == "idle in transaction":
        parts.append(f"idle in transaction for {duration(side.state_age_s)}")
    elif side.state == "idle in transaction (aborted)":
        parts.append(f"idle in a failed transaction for {duration(side.state_age_s)}")
    elif side.state == "active":
        wait = f", waiting on {side.wait_event_type}:{side.wait_event}" if side.wait_event else ""
        parts.append(f"running a query for {duration(side.query_age_s)}{wait}")
    elif side.state == "idle":
        parts.append(f"idle (no transaction) for {duration(side.state_age_s)}")
    else:
        parts.append(side.state or "unknown state")
    if side.blocks:
        parts.append(f"blocking {side.blocks} session{'s' if side.blocks != 1 else ''}")
    return "; ".join(parts)


def severity(side: ServerSide | None, held_for_s: float, leak_threshold_s: float) -> str:
    """ok / warn / danger: the colour of the row."""
    if side is not None and side.seen and (side.blocks or side.blocked_by):
        return "danger"
    if held_for_s >= leak_threshold_s:
        return "danger"
    if side is not None and side.state is not None and side.state.startswith("idle in transaction"):
        return "warn"
    if held_for_s >= leak_threshold_s / 4:
        return "warn"
    return "ok"


@dataclass
class OtherBackends:
    """Backends of the same application that are not this process's pool."""

    count: int
    by_state: dict[str, int]
    pids: list[int]

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "by_state": dict(self.by_state), "pids": list(self.pids)}


def other_backends(
    snapshot: Snapshot | None,
    application_names: Iterable[str],
    own_pids: Iterable[int],
    limit: int = 50,
) -> OtherBackends | None:
    """Sessions with one of our application names that this process does not own.

    Unnamed connections are not counted: an empty application_name matches psql and
    every other tool, which would make the number meaningless.
    """
    if snapshot is None:
        return None
    names = {n for n in application_names if n}
    if not names:
        return OtherBackends(0, {}, [])
    own = set(own_pids)
    by_state: dict[str, int] = {}
    pids: list[int] = []
    for pid, s in snapshot.sessions.items():
        if pid in own or s.application_name not in names:
            continue
        if s.backend_type not in (None, "client backend"):
            continue
        state = s.state or "unknown"
        by_state[state] = by_state.get(state, 0) + 1
        pids.append(pid)
    pids.sort()
    return OtherBackends(len(pids), by_state, pids[:limit])


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)

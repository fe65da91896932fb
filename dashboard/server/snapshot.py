"""One sample of the server, and the bodies every viewer reads from it.

Built once per sampler cycle; the JSON bodies and the page rows are computed at most once
per snapshot (cached), so the cost of a viewer is a dictionary lookup plus rendering.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from dashboard.server import activity as act
from dashboard.server.model import (
    HIDDEN_QUERY_NOTE,
    Privileges,
    RelationLockRow,
    ServerSettings,
    Session,
    split_relation,
)
from dashboard.server.tree import PREPARED_XACT_PID, BlockingGraph, TreeRow, analyze, nest, walk

QUERY_CHARS_JSON = 1000
MAX_TREE_DEPTH = 64
MAX_TREE_ROWS = 3000


@dataclass
class Snapshot:
    taken_at: float  # epoch seconds (dashboard clock) when the sample completed
    server_now: datetime  # the server's clock when it answered
    duration_ms: float  # how long the sampling statement(s) took
    sessions: dict[int, Session]
    graph: BlockingGraph
    settings: ServerSettings
    privileges: Privileges
    long_query_s: float = 30.0
    cycle: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    # Relation-level locks of other backends on the relations watched during this cycle
    # (`Sampler.watch_relations`); None when nothing was watched (the query did not run).
    relation_locks: tuple[RelationLockRow, ...] | None = None
    watched_relnames: frozenset[str] = frozenset()  # bare relnames the query covered

    # --- the interface other areas rely on ---------------------------------------------
    @property
    def blocked_by(self) -> dict[int, list[int]]:
        """pid -> pids blocking it (only sessions that wait)."""
        return self.graph.blocked_by

    @property
    def blast_radius(self) -> dict[int, int]:
        """pid -> number of distinct sessions waiting behind it, directly or transitively
        (only pids with at least one waiter; use `.get(pid, 0)`)."""
        return self.graph.blast_radius

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.taken_at)

    def session(self, pid: int) -> Session | None:
        return self.sessions.get(pid)

    def covers_relations(self, names: Iterable[str]) -> bool:
        """Whether `relation_locks` of this snapshot include every lock on these relations
        ("table" or "schema.table"): they were watched when it was taken."""
        if self.relation_locks is None:
            return False
        wanted = (split_relation(n)[1] for n in names if n and n != "?")  # "?": unnamed
        return all(relname in self.watched_relnames for relname in wanted)

    # --- the lock tree -----------------------------------------------------------------
    def _order(self, pid: int) -> tuple[int, float, float, int]:
        s = self.sessions.get(pid)
        wait = s.wait.wait_age_s if s and s.wait and s.wait.wait_age_s is not None else 0.0
        xact = s.xact_age_s if s and s.xact_age_s is not None else 0.0
        return (-self.graph.blast_radius.get(pid, 0), -wait, -xact, pid)

    @cached_property
    def _walk_rows(self) -> tuple[list[TreeRow], bool]:
        w = walk(self.graph, self._order, max_depth=MAX_TREE_DEPTH, max_rows=MAX_TREE_ROWS)
        return w.rows, w.truncated

    def node(self, pid: int, row: TreeRow | None = None) -> dict[str, Any]:
        """Everything shown about one backend in the lock tree (JSON-ready)."""
        s = self.sessions.get(pid)
        g = self.graph
        waits_on = [w for w in g.waiters.get(pid, [])]
        blocking_on = sorted(
            {
                ws.wait.target()
                for w in waits_on
                if (ws := self.sessions.get(w)) is not None and ws.wait is not None
            }
        )
        hidden = s is not None and s.hidden
        query = None if hidden or s is None else (s.query or "")[:QUERY_CHARS_JSON]
        d: dict[str, Any] = {
            "pid": pid,
            "backend_start": s.backend_start.isoformat() if s and s.backend_start else None,
            # None (with query_visible false and a note) when the role may not read it,
            # never the server's "<insufficient privilege>" placeholder.
            "query": "" if s is None else query,
            "query_visible": s is not None and not hidden,
            "query_note": HIDDEN_QUERY_NOTE if hidden else None,
            "blast_radius": g.blast_radius.get(pid, 0),
            "direct_waiters": len(waits_on),
            "blocked_by": list(g.blocked_by.get(pid, [])),
            "blocking_on": blocking_on,
            "known": s is not None,
            "prepared_transaction": pid == PREPARED_XACT_PID,
            "in_cycle": pid in g.in_cycle,
        }
        if s is not None:
            d.update(
                {
                    "user": s.usename,
                    "application_name": s.application_name,
                    "client_addr": s.client_addr,
                    "database": s.datname,
                    "backend_type": s.backend_type,
                    "state": s.state,
                    "wait_event_type": s.wait_event_type,
                    "wait_event": s.wait_event,
                    "xact_age_s": _r(s.xact_age_s),
                    "query_age_s": _r(s.query_age_s),
                    "state_age_s": _r(s.state_age_s),
                    "is_dashboard": s.is_dashboard,
                    "signalable": s.signalable_in(self.privileges.database or None),
                    "hidden": s.hidden,
                }
            )
            w = s.wait
            d.update(
                {
                    "mode": w.mode if w else None,
                    "locktype": w.locktype if w else None,
                    "relation": w.relation if w else None,
                    "wait_target": w.target() if w else None,
                    "wait_age_s": _r(w.wait_age_s) if w else None,
                    "wait_age_approx": w.wait_age_approx if w else False,
                }
            )
        else:
            d.update({"signalable": False, "mode": None, "relation": None, "wait_age_s": None})
        if row is not None:
            d["depth"] = row.depth
            d["parent"] = row.parent
            d["repeat"] = row.repeat
            d["truncated"] = row.truncated
        return d

    @cached_property
    def _tree(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows, _ = self._walk_rows
        flat = [self.node(r.pid, r) for r in rows]
        it = iter(flat)
        roots = nest(rows, lambda _row: next(it))
        return flat, roots

    def lock_groups(self) -> list[dict[str, Any]]:
        """For the page: one group per root, with the pre-order rows under it."""
        flat, _ = self._tree
        groups: list[dict[str, Any]] = []
        for node in flat:
            if node["depth"] == 0:
                groups.append({"root": node, "rows": []})
            else:
                groups[-1]["rows"].append(node)
        return groups

    @cached_property
    def _locks_body(self) -> dict[str, Any]:
        _, roots = self._tree
        _, truncated = self._walk_rows
        waiters = [
            self.node(pid) for pid in sorted(self.graph.blocked_by, key=lambda p: self._order(p))
        ]
        waits = [n["wait_age_s"] for n in waiters if n.get("wait_age_s") is not None]
        hidden = sum(1 for s in self.sessions.values() if s.hidden)
        return {
            "taken_at": self.taken_at,
            "server_time": self.server_now.isoformat(),
            "sample_ms": round(self.duration_ms, 3),
            "blocked_count": self.graph.blocked_count,
            "root_count": len(self.graph.roots),
            "cycle_count": len(self.graph.cycle_roots),
            "longest_wait_s": max(waits) if waits else None,
            "roots": roots,
            "waiters": waiters,
            "truncated": truncated,
            "wait_age_source": "pg_locks.waitstart"
            if self.settings.has_waitstart
            else "query_start (upper bound, PostgreSQL < 14)",
            "hidden_sessions": hidden,
            "privileges": self.privileges.to_json(),
            "visibility": self.privileges.visibility(hidden),
        }

    def locks_json(self) -> dict[str, Any]:
        """The /api/locks body. Shared between viewers: do not mutate; copy to extend."""
        return self._locks_body

    # --- activity ----------------------------------------------------------------------
    @cached_property
    def _activity_body(self) -> dict[str, Any]:
        body = act.summarize(
            self.sessions.values(),
            self.settings,
            self.privileges,
            long_query_s=self.long_query_s,
        )
        body["taken_at"] = self.taken_at
        body["server_time"] = self.server_now.isoformat()
        body["sample_ms"] = round(self.duration_ms, 3)
        body["budget_bar"] = act.budget_bar(body["by_state"], body["usable_connections"])
        return body

    def activity_json(self) -> dict[str, Any]:
        """The /api/activity body. Shared between viewers: do not mutate; copy to extend."""
        return self._activity_body


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def build_snapshot(
    rows: Iterable[Mapping[Any, Any]],
    settings: ServerSettings,
    privileges: Privileges,
    *,
    taken_at: float,
    duration_ms: float,
    long_query_s: float,
    cycle: int = 0,
    relation_lock_rows: Iterable[Mapping[Any, Any]] | None = None,
    watched_relnames: Iterable[str] = (),
) -> Snapshot:
    """One sampler result (pg_stat_activity rows with their blockers) as a `Snapshot`;
    `relation_lock_rows` are the rows of `RELATION_LOCKS` when relations were watched."""
    sessions: list[Session] = []
    blocked_by: dict[int, list[int]] = {}
    server_now: datetime | None = None
    waitstart = settings.has_waitstart
    for row in rows:
        if server_now is None:
            server_now = row["server_now"]
        now = server_now if server_now is not None else datetime.now(UTC)
        s = Session.from_row(row, now, waitstart_known=waitstart)
        sessions.append(s)
        blockers = row.get("blocked_by")
        if blockers:
            blocked_by[s.pid] = [int(b) for b in blockers]
    now = server_now or datetime.now(UTC)
    relation_locks = None
    if relation_lock_rows is not None:
        relation_locks = [RelationLockRow.from_row(r, now) for r in relation_lock_rows]
    return assemble_snapshot(
        sessions,
        blocked_by,
        settings,
        privileges,
        taken_at=taken_at,
        server_now=now,
        duration_ms=duration_ms,
        long_query_s=long_query_s,
        cycle=cycle,
        relation_locks=relation_locks,
        watched_relnames=watched_relnames,
    )


def assemble_snapshot(
    sessions: Iterable[Session],
    blocked_by: Mapping[int, Iterable[int]],
    settings: ServerSettings,
    privileges: Privileges,
    *,
    taken_at: float,
    server_now: datetime,
    duration_ms: float = 0.0,
    long_query_s: float = 30.0,
    cycle: int = 0,
    relation_locks: Iterable[RelationLockRow] | None = None,
    watched_relnames: Iterable[str] = (),
) -> Snapshot:
    """A `Snapshot` from parsed records: sessions by pid, and the blocking graph analysed
    from `pid -> blocking pids` (the second half of `build_snapshot`; pure)."""
    return Snapshot(
        taken_at=taken_at,
        server_now=server_now,
        duration_ms=duration_ms,
        sessions={s.pid: s for s in sessions},
        graph=analyze(blocked_by),
        settings=settings,
        privileges=privileges,
        long_query_s=long_query_s,
        cycle=cycle,
        relation_locks=None if relation_locks is None else tuple(relation_locks),
        watched_relnames=frozenset(watched_relnames),
    )

"""Live conflicts of a migration statement: the sessions that hold or wait for a lock that
conflicts with the statement's lock on the same relation right now.

Pure: the inputs are the statement's `RelationLock`s (static analysis, locks.py), the
relation-level locks of the sampler's snapshot (`RelationLockRow`, server/model.py), the
snapshot's sessions by pid, and the pool ledger's code origins by backend pid. Which mode
conflicts with which is PostgreSQL's table (lock_table.py); a statement whose lock mode is
"unknown" is taken as AccessExclusiveLock (it may be anything up to it).

Relation names: the statement names "table" or "schema.table" (identifiers as the parser
folded them); a lock row has the relation's schema and relname. A qualified name matches
that schema only; an unqualified one matches the relation it resolves to when known
(`resolved`, e.g. from `relation_sizes`), else the relations of that name visible on the
search path, else that name in any schema.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dashboard.formatting import truncate_query
from dashboard.review.lock_table import UNKNOWN_RELATION, conflicts, strongest
from dashboard.review.model import ACCESS_EXCLUSIVE, LOCK_MODES, UNKNOWN, RelationLock
from dashboard.server.model import HIDDEN_QUERY_NOTE, RelationLockRow, Session, split_relation

QUERY_CHARS = 1000
PREPARED_STATE = "prepared transaction"


@dataclass(frozen=True, slots=True)
class Conflict:
    """One session whose lock on a relation conflicts with a statement's lock on it."""

    relation: str  # the statement's relation, as the statement names it
    locked_relation: str  # the relation the session locks, "schema.name"
    wants: str  # the statement's lock mode (pg_locks.mode name; "unknown" kept as is)
    pid: int | None  # None: a prepared transaction
    backend_start: datetime | None
    mode: str  # the session's (strongest conflicting) lock mode on the relation
    granted: bool  # True: it holds the lock; False: it waits for it
    state: str | None
    xact_age_s: float | None
    wait_age_s: float | None  # how long it has waited for the lock (granted = False)
    query: str | None  # None when the dashboard's role may not read it
    query_visible: bool
    application_name: str | None
    origin: str | None  # pool ledger's code origin ("file:line in function"), if observed
    seen: bool = True  # the session is in the snapshot's pg_stat_activity rows

    @property
    def blocks(self) -> str:
        """What this session does to the statement, in words."""
        who = f"pid {self.pid}" if self.pid is not None else "a prepared transaction"
        if self.granted:
            return (
                f"{who} holds {self.mode} on {self.locked_relation}: the statement "
                f"({self.wants}) would wait until its transaction ends"
            )
        return (
            f"{who} waits for {self.mode} on {self.locked_relation}: the statement "
            f"({self.wants}) would queue behind it"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "backend_start": self.backend_start.isoformat() if self.backend_start else None,
            "mode": self.mode,
            "granted": self.granted,
            "state": self.state,
            "xact_age_s": _r(self.xact_age_s),
            "query": self.query,
            "origin": self.origin,
            "relation": self.relation,
            "locked_relation": self.locked_relation,
            "wants": self.wants,
            "wait_age_s": _r(self.wait_age_s),
            "query_visible": self.query_visible,
            "query_note": HIDDEN_QUERY_NOTE if self.seen and not self.query_visible else None,
            "seen": self.seen,
            "application_name": self.application_name,
            "blocks": self.blocks,
        }


def effective_mode(mode: str) -> str:
    """The statement mode to check conflicts with: "unknown" (or any name that is not a
    table lock mode) counts as AccessExclusiveLock."""
    return mode if mode in LOCK_MODES else ACCESS_EXCLUSIVE


def matching_rows(
    relation: str,
    rows: Sequence[RelationLockRow],
    resolved: Mapping[str, str] | None = None,
) -> list[RelationLockRow]:
    """The lock rows on the relation a statement names (see the module's docstring)."""
    schema, name = split_relation(relation)
    if schema is None and resolved is not None and relation in resolved:
        schema, name = split_relation(resolved[relation])
    same_name = [r for r in rows if r.name == name]
    if schema is not None:
        return [r for r in same_name if r.schema == schema]
    visible = [r for r in same_name if r.visible]
    return visible or same_name


def conflicts_for(
    locks: Sequence[RelationLock],
    rows: Sequence[RelationLockRow],
    sessions: Mapping[int, Session],
    origins: Mapping[int, str],
    *,
    exclude_pids: Collection[int] = (),
    resolved: Mapping[str, str] | None = None,
) -> list[Conflict]:
    """Every session (but `exclude_pids`, e.g. the runner) that holds or waits for a lock
    conflicting with one of the statement's `locks` on the same relation. One entry per
    session, relation and granted/waiting, with its strongest conflicting mode. Granted
    holders first, then the oldest transaction first."""
    found: dict[tuple[str, int | None, str, bool], tuple[RelationLockRow, str, list[str]]] = {}
    for lock in locks:
        if lock.relation == UNKNOWN_RELATION or not lock.relation:
            continue  # tables the text does not name: nothing to match
        wants = effective_mode(lock.mode)
        for row in matching_rows(lock.relation, rows, resolved):
            if row.pid is not None and row.pid in exclude_pids:
                continue
            if row.mode not in LOCK_MODES or not conflicts(wants, row.mode):
                continue
            key = (lock.relation, row.pid, row.qualified, row.granted)
            if key in found:
                found[key][2].append(row.mode)
            else:
                found[key] = (row, lock.mode if lock.mode == UNKNOWN else wants, [row.mode])
    out = [
        _conflict(relation, row, wants, strongest(modes), sessions, origins)
        for (relation, *_), (row, wants, modes) in found.items()
    ]
    out.sort(key=_order)
    return out


def _conflict(
    relation: str,
    row: RelationLockRow,
    wants: str,
    mode: str,
    sessions: Mapping[int, Session],
    origins: Mapping[int, str],
) -> Conflict:
    s = sessions.get(row.pid) if row.pid is not None else None
    hidden = s is not None and s.hidden
    wait_age = row.wait_age_s
    if not row.granted and wait_age is None and s is not None and s.wait is not None:
        wait_age = s.wait.wait_age_s  # before PostgreSQL 14: the session's wait (upper bound)
    return Conflict(
        relation=relation,
        locked_relation=row.qualified,
        wants=wants,
        pid=row.pid,
        backend_start=s.backend_start if s else None,
        mode=mode,
        granted=row.granted,
        state=s.state if s else (PREPARED_STATE if row.pid is None else None),
        xact_age_s=s.xact_age_s if s else None,
        wait_age_s=None if row.granted else wait_age,
        query=None if hidden or s is None else truncate_query(s.query, QUERY_CHARS),
        query_visible=s is not None and not hidden,
        application_name=s.application_name if s else None,
        origin=origins.get(row.pid) if row.pid is not None else None,
        seen=s is not None,
    )


def _order(c: Conflict) -> tuple[int, float, int]:
    xact = c.xact_age_s if c.xact_age_s is not None else -1.0
    return (0 if c.granted else 1, -xact, c.pid if c.pid is not None else -1)


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)

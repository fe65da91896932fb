"""What the live database adds to a migration review: table sizes and live conflicts.

- `relation_sizes(conn_or_engine, names)`: row estimate and total size of the relations a
  plan touches: one statement (`RELATION_SIZES`) under tight lock_timeout and
  statement_timeout. The size functions take an AccessShareLock on each relation; when one
  is locked (or an AccessExclusiveLock request is queued on it) they would wait, so on a
  lock timeout the sizes are read from the catalog alone (`RELATION_SIZES_CATALOG`, pages
  as of the last VACUUM / ANALYZE; `bytes_approx` is then true).
- `live_conflicts(statement_locks, snapshot, origins)`: reads the sampler's snapshot (no
  query of its own). The relations must be watched (`Sampler.watch_relations`) for the
  snapshot to carry their locks; see `Snapshot.covers_relations`.
- `origins_by_pid(pools)`: backend pid -> the pool ledger's code origin of the checked-out
  connection, for the observed pools (no I/O; origins resolved lazily, on lookup).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dashboard.pool.instrument import LedgerEntry, PoolInstrument
from dashboard.pool.registry import PoolRegistry
from dashboard.review.conflicts import Conflict, conflicts_for
from dashboard.review.lock_table import UNKNOWN_RELATION
from dashboard.review.model import RelationLock
from dashboard.server import queries as q
from dashboard.server.snapshot import Snapshot

LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"  # statement_timeout


@dataclass(frozen=True, slots=True)
class RelationSize:
    """Row estimate and total size (heap + indexes + TOAST) of one relation."""

    name: str  # as asked for ("table" or "schema.table")
    schema: str
    relname: str
    relkind: str
    rows_estimate: int | None  # pg_class.reltuples; None: never analysed ("unknown")
    bytes: int | None
    bytes_approx: bool = False  # from catalog pages: the relation was locked

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.relname}"

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], *, approx: bool = False) -> RelationSize:
        rows, size = row["rows_estimate"], row["bytes"]
        return cls(
            name=str(row["name"]),
            schema=str(row["schema"]),
            relname=str(row["relname"]),
            relkind=str(row["relkind"]),
            rows_estimate=int(rows) if rows is not None else None,
            bytes=int(size) if size is not None else None,
            bytes_approx=approx,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows_estimate": self.rows_estimate,
            "bytes": self.bytes,
            "relation": self.qualified,
            "relkind": self.relkind,
            "rows_estimate_known": self.rows_estimate is not None,
            "rows_estimate_note": None
            if self.rows_estimate is not None
            else "unknown (never analysed)",
            "bytes_approx": self.bytes_approx,
        }


def _wanted(names: Iterable[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if name and name != UNKNOWN_RELATION and name not in out:
            out.append(name)
    return out


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None), exc):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


async def _sizes_on(conn: AsyncConnection, names: list[str]) -> list[RelationSize]:
    params = {"names": names}
    try:
        async with conn.begin_nested():
            rows = (await conn.execute(q.RELATION_SIZES, params)).mappings().all()
        return [RelationSize.from_row(r) for r in rows]
    except DBAPIError as exc:
        if _sqlstate(exc) not in (LOCK_NOT_AVAILABLE, QUERY_CANCELED):
            raise
    rows = (await conn.execute(q.RELATION_SIZES_CATALOG, params)).mappings().all()
    return [RelationSize.from_row(r, approx=True) for r in rows]


async def relation_sizes(
    conn_or_engine: AsyncConnection | AsyncEngine, names: Iterable[str]
) -> list[RelationSize]:
    """Row estimate and total size of each relation of `names` that exists, in the order
    asked (duplicates once); unknown names are simply absent. One statement (two when a
    relation is locked: see the module's docstring). Given an engine or a connection not
    in a transaction, it runs in its own short transaction with tight timeouts; given a
    connection inside a transaction, under that transaction's settings."""
    wanted = _wanted(names)
    if not wanted:
        return []
    if isinstance(conn_or_engine, AsyncEngine):
        async with conn_or_engine.connect() as conn:
            return await _guarded(conn, wanted)
    if conn_or_engine.in_transaction():
        return await _sizes_on(conn_or_engine, wanted)
    return await _guarded(conn_or_engine, wanted)


async def _guarded(conn: AsyncConnection, names: list[str]) -> list[RelationSize]:
    async with conn.begin():
        await conn.execute(
            q.TIGHT_TIMEOUTS,
            {
                "lock_ms": str(q.SAMPLER_LOCK_TIMEOUT_MS),
                "stmt_ms": str(q.SAMPLER_STATEMENT_TIMEOUT_MS),
            },
        )
        return await _sizes_on(conn, names)


def resolved_names(sizes: Iterable[RelationSize]) -> dict[str, str]:
    """name as asked -> "schema.relname" it resolved to (for `live_conflicts`)."""
    return {s.name: s.qualified for s in sizes}


def live_conflicts(
    statement_locks: Sequence[RelationLock],
    snapshot: Snapshot | None,
    origins: Mapping[int, str],
    exclude_pids: Collection[int] = (),
    *,
    resolved: Mapping[str, str] | None = None,
) -> list[Conflict]:
    """The sessions conflicting with a statement's locks right now, from the sampler's
    snapshot (empty when there is none or it carries no relation locks: watch the
    relations first). No I/O."""
    if snapshot is None or snapshot.relation_locks is None:
        return []
    return conflicts_for(
        statement_locks,
        snapshot.relation_locks,
        snapshot.sessions,
        origins,
        exclude_pids=exclude_pids,
        resolved=resolved,
    )


class LedgerOrigins(Mapping[int, str]):
    """backend pid -> code origin ("file:line in function") of a checked-out connection of
    the observed pools, as the pool page shows it. The ledger is read once, when built;
    each origin is resolved only when looked up."""

    def __init__(self, instruments: Iterable[PoolInstrument]) -> None:
        self._entries: dict[int, LedgerEntry] = {}
        for inst in instruments:
            for entry in inst.entries():
                pid = entry.backend_pid
                if pid is not None:
                    self._entries[pid] = entry
        self._resolved: dict[int, str | None] = {}

    def _origin(self, pid: int) -> str | None:
        if pid not in self._resolved:
            entry = self._entries.get(pid)
            frame = entry.origin() if entry is not None else None
            self._resolved[pid] = str(frame) if frame is not None else None
        return self._resolved[pid]

    def __getitem__(self, pid: int) -> str:
        origin = self._origin(pid) if pid in self._entries else None
        if origin is None:
            raise KeyError(pid)
        return origin

    def __contains__(self, pid: object) -> bool:
        return isinstance(pid, int) and pid in self._entries and self._origin(pid) is not None

    def __iter__(self) -> Iterator[int]:
        return (pid for pid in list(self._entries) if self._origin(pid) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def origins_by_pid(
    pools: PoolRegistry | Mapping[str, PoolInstrument] | Iterable[PoolInstrument] | None,
) -> Mapping[int, str]:
    """backend pid -> code origin of every connection checked out of the observed pools
    (`Dashboard.pools`, or instruments). Empty when no pool is observed."""
    if pools is None:
        return {}
    if isinstance(pools, PoolRegistry):
        return LedgerOrigins(pools.instruments.values())
    if isinstance(pools, Mapping):
        return LedgerOrigins(pools.values())
    return LedgerOrigins(pools)

"""Plain records of one sample. Pure: no I/O, no framework."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DASHBOARD_APP_PREFIX = "dashboard"
INSUFFICIENT_PRIVILEGE = "<insufficient privilege>"
# Shown instead of a query the sampling role may not read (never the server's placeholder).
HIDDEN_QUERY_NOTE = "query hidden: the dashboard's role lacks pg_read_all_stats"


def age_s(now: datetime, then: datetime | None) -> float | None:
    """Seconds from `then` to `now` (never negative), None when `then` is unknown."""
    if then is None:
        return None
    return max(0.0, (now - then).total_seconds())


@dataclass(slots=True)
class LockWait:
    """The one lock a waiting backend wants (from pg_locks, granted = false)."""

    locktype: str
    mode: str
    relation: str | None  # schema-qualified, quoted where needed; None if unresolved
    relation_oid: int | None
    transactionid: str | None
    virtualxid: str | None
    objid: int | None
    wait_age_s: float | None
    wait_age_approx: bool  # True before PostgreSQL 14 (no pg_locks.waitstart)

    def target(self) -> str:
        """What is being waited for, in words."""
        if self.locktype == "relation":
            return self.relation or _oid_text(self.relation_oid)
        if self.locktype == "tuple":
            return f"row in {self.relation or _oid_text(self.relation_oid)}"
        if self.locktype == "transactionid":
            where = f" in {self.relation}" if self.relation else ""
            return f"row lock{where} (transaction {self.transactionid} must end)"
        if self.locktype == "virtualxid":
            return f"end of transaction {self.virtualxid}"
        if self.locktype == "advisory":
            return f"advisory lock {self.objid}"
        if self.locktype == "extend":
            return f"extension of {self.relation or _oid_text(self.relation_oid)}"
        return self.locktype


def _oid_text(oid: int | None) -> str:
    return f"relation oid {oid} (other database)" if oid is not None else "unknown relation"


@dataclass(slots=True)
class Session:
    """One row of pg_stat_activity, with ages computed against the server's clock."""

    pid: int
    backend_start: datetime | None
    usename: str | None
    application_name: str | None
    client_addr: str | None
    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    xact_start: datetime | None
    query_start: datetime | None
    state_change: datetime | None
    query: str | None
    backend_type: str | None
    datname: str | None
    xact_age_s: float | None = None
    query_age_s: float | None = None
    state_age_s: float | None = None
    wait: LockWait | None = None

    @property
    def is_dashboard(self) -> bool:
        return (self.application_name or "").startswith(DASHBOARD_APP_PREFIX)

    @property
    def is_client(self) -> bool:
        return self.backend_type == "client backend"

    @property
    def hidden(self) -> bool:
        """The sampling role may not see this session's details (PostgreSQL then shows
        NULL state, wait_event_type, backend_start, xact_start ... and this placeholder)."""
        return self.query == INSUFFICIENT_PRIVILEGE

    def signalable_in(self, database: str | None) -> bool:
        """May the dashboard offer cancel/terminate for this session at all?"""
        return (
            self.is_client
            and not self.is_dashboard
            and self.backend_start is not None
            and database is not None
            and self.datname == database
        )

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], now: datetime, *, waitstart_known: bool) -> Session:
        s = cls(
            pid=int(row["pid"]),
            backend_start=row["backend_start"],
            usename=row["usename"],
            application_name=row["application_name"],
            client_addr=row["client_addr"],
            state=row["state"],
            wait_event_type=row["wait_event_type"],
            wait_event=row["wait_event"],
            xact_start=row["xact_start"],
            query_start=row["query_start"],
            state_change=row["state_change"],
            query=row["query"],
            backend_type=row["backend_type"],
            datname=row["datname"],
        )
        s.xact_age_s = age_s(now, s.xact_start)
        s.query_age_s = age_s(now, s.query_start)
        s.state_age_s = age_s(now, s.state_change)
        if row.get("wait_locktype"):
            if waitstart_known and row.get("wait_start") is not None:
                wait_age, approx = age_s(now, row["wait_start"]), False
            else:
                # The wait began at or after the statement started: an upper bound.
                wait_age, approx = s.query_age_s, True
            relid = row.get("wait_relid")
            s.wait = LockWait(
                locktype=row["wait_locktype"],
                mode=row["wait_mode"],
                relation=row.get("wait_relation"),
                relation_oid=int(relid) if relid is not None else None,
                transactionid=row.get("wait_xid"),
                virtualxid=row.get("wait_vxid"),
                objid=row.get("wait_objid"),
                wait_age_s=wait_age,
                wait_age_approx=approx,
            )
        return s


# --- relation locks (only sampled while a review watches relations) --------------------


def split_relation(name: str) -> tuple[str | None, str]:
    """ "schema.table" -> ("schema", "table"); "table" -> (None, "table"). Names are as the
    review area writes them (identifiers already folded by the parser, not quoted)."""
    schema, dot, table = name.partition(".")
    return (schema, table) if dot else (None, name)


@dataclass(frozen=True, slots=True)
class RelationLockRow:
    """One relation-level lock of another backend (pg_locks, locktype 'relation'), held
    (granted) or awaited, with the relation resolved in this database."""

    pid: int | None  # None: a prepared transaction holds it
    mode: str  # pg_locks.mode: "AccessShareLock", ...
    granted: bool
    schema: str
    name: str  # pg_class.relname
    regclass: str  # the relation as ::regclass text (qualified when not on the search_path)
    relkind: str  # "r" table, "p" partitioned, "i" index, "S" sequence, "m" matview, ...
    visible: bool = True  # an unqualified name in the dashboard's search_path means it
    wait_start: datetime | None = None  # PostgreSQL 14+, waiters only
    wait_age_s: float | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], now: datetime) -> RelationLockRow:
        pid = row["pid"]
        wait_start = row.get("wait_start")
        return cls(
            pid=int(pid) if pid is not None else None,
            mode=str(row["mode"]),
            granted=bool(row["granted"]),
            schema=str(row["schema"]),
            name=str(row["name"]),
            regclass=str(row["regclass"]),
            relkind=str(row["relkind"]),
            visible=bool(row.get("visible", True)),
            wait_start=wait_start,
            wait_age_s=None if row["granted"] else age_s(now, wait_start),
        )


# --- settings ---------------------------------------------------------------------------

_UNITS_MS = {
    "us": 0.001,
    "ms": 1.0,
    "s": 1000.0,
    "min": 60_000.0,
    "h": 3_600_000.0,
    "d": 86_400_000.0,
}
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_duration_ms(value: str | None, default_unit: str = "ms") -> float | None:
    """'5min' -> 300000.0, '0' -> 0.0, '250' -> 250.0 (ms); None when unparseable."""
    if value is None:
        return None
    m = _DURATION.match(value.strip().strip("'\"").lower())
    if not m:
        return None
    number, unit = float(m.group(1)), m.group(2) or default_unit
    factor = _UNITS_MS.get(unit)
    return None if factor is None else number * factor


# Sources for which pg_settings.setting is the server-wide value rather than something
# this session or its role changed.
SERVER_SOURCES = frozenset(
    {"default", "configuration file", "command line", "environment variable", "override"}
)


@dataclass(slots=True)
class Timeout:
    name: str
    ms: float | None  # effective default for new sessions in this database; 0 = unbounded
    origin: str  # where the value comes from, in words
    role_overrides: list[tuple[str, float | None]] = field(default_factory=list)

    @property
    def unbounded(self) -> bool:
        return self.ms == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ms": self.ms,
            "unbounded": self.unbounded,
            "origin": self.origin,
            "role_overrides": [{"role": r, "ms": v} for r, v in self.role_overrides],
        }


TIMEOUT_NAMES = (
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
)


@dataclass(slots=True)
class ServerSettings:
    server_version_num: int = 0
    max_connections: int = 0
    superuser_reserved_connections: int = 0
    reserved_connections: int = 0
    track_activity_query_size: int = 0
    timeouts: dict[str, Timeout] = field(default_factory=dict)
    read_at: float = 0.0

    @property
    def has_waitstart(self) -> bool:
        return self.server_version_num >= 140000

    @property
    def usable_connections(self) -> int:
        return max(
            0,
            self.max_connections - self.superuser_reserved_connections - self.reserved_connections,
        )


def build_settings(
    rows: Sequence[Mapping[str, Any]],
    db_role_rows: Sequence[Mapping[str, Any]],
    file_rows: Sequence[Mapping[str, Any]] | None,
    read_at: float,
) -> ServerSettings:
    """Merge pg_settings, pg_db_role_setting and (when readable) pg_file_settings into the
    values a *new application session* in this database gets. The dashboard's own
    connection overrides some timeouts at start-up, so its pg_settings view alone would lie.
    """
    by_name = {r["name"]: r for r in rows}

    def as_int(name: str) -> int:
        r = by_name.get(name)
        try:
            return int(r["setting"]) if r is not None else 0
        except (TypeError, ValueError):
            return 0

    file_values: dict[str, str] = {}
    for fr in file_rows or []:
        file_values[fr["name"]] = fr["setting"]  # ordered by seqno: the last one wins

    db_values: dict[str, str] = {}
    global_values: dict[str, str] = {}  # ALTER ROLE ALL SET
    role_values: dict[str, list[tuple[str, str, bool]]] = {}
    for dr in db_role_rows:
        name, _, value = str(dr["cfg"]).partition("=")
        if dr["role"] is None:
            (db_values if dr["this_database"] else global_values)[name] = value
        else:
            role_values.setdefault(name, []).append((dr["role"], value, bool(dr["this_database"])))

    timeouts: dict[str, Timeout] = {}
    for name in TIMEOUT_NAMES:
        r = by_name.get(name)
        if r is None:
            continue  # not in this server version
        unit = r["unit"] or "ms"
        if name in db_values:
            ms, origin = parse_duration_ms(db_values[name], unit), "ALTER DATABASE"
        elif name in global_values:
            ms, origin = parse_duration_ms(global_values[name], unit), "ALTER ROLE ALL"
        elif name in file_values:
            ms, origin = parse_duration_ms(file_values[name], unit), "server configuration"
        elif r["source"] in SERVER_SOURCES:
            ms = parse_duration_ms(r["setting"], unit)
            origin = "built-in default" if r["source"] == "default" else str(r["source"])
        else:
            # This session changed it; without pg_file_settings the server value is unknown.
            assumed = "" if file_rows is not None else " (assumed)"
            ms, origin = parse_duration_ms(r["boot_val"], unit), "built-in default" + assumed
        overrides: dict[str, tuple[float | None, bool]] = {}
        for role, value, this_db in role_values.get(name, []):
            # a role+database entry beats a role-wide one
            if role not in overrides or this_db:
                overrides[role] = (parse_duration_ms(value, unit), this_db)
        timeouts[name] = Timeout(
            name=name,
            ms=ms,
            origin=origin,
            role_overrides=sorted((k, v[0]) for k, v in overrides.items()),
        )
    return ServerSettings(
        server_version_num=as_int("server_version_num"),
        max_connections=as_int("max_connections"),
        superuser_reserved_connections=as_int("superuser_reserved_connections"),
        reserved_connections=as_int("reserved_connections"),
        track_activity_query_size=as_int("track_activity_query_size"),
        timeouts=timeouts,
        read_at=read_at,
    )


@dataclass(slots=True)
class Privileges:
    role: str = ""
    database: str = ""
    is_superuser: bool = False
    read_all_stats: bool = False
    signal_backend: bool = False

    @property
    def sees_all_queries(self) -> bool:
        return self.is_superuser or self.read_all_stats

    def grant_sql(self) -> str:
        """The statement (run as a superuser) that lets this role see every session."""
        target = quote_ident(self.role) if self.role else "CURRENT_USER"
        return f"GRANT pg_read_all_stats TO {target};"

    def visibility(self, hidden_sessions: int) -> dict[str, Any]:
        """What the sampling role can see of other users' sessions, in plain words."""
        if self.sees_all_queries:
            return {
                "all_stats": True,
                "role": self.role,
                "reason": None,
                "grant": None,
                "hidden_sessions": hidden_sessions,
            }
        return {
            "all_stats": False,
            "role": self.role,
            "reason": f"the dashboard's role {self.role!r} is neither superuser nor a member of "
            "pg_read_all_stats: other users' sessions show no query text, state, start time "
            "or transaction age, and cannot be cancelled or terminated from here. The lock "
            "tree is still complete (it comes from pg_locks and pg_blocking_pids).",
            "grant": self.grant_sql(),
            "hidden_sessions": hidden_sessions,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "database": self.database,
            "is_superuser": self.is_superuser,
            "read_all_stats": self.read_all_stats,
            "signal_backend": self.signal_backend,
            "sees_all_queries": self.sees_all_queries,
        }


def quote_ident(name: str) -> str:
    """A role name as a quoted SQL identifier (always quoted: safe for any name)."""
    return '"' + name.replace('"', '""') + '"'

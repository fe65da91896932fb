"""Where the schema stands: a read-only model built from ScriptDirectory + MigrationContext.

Never executes the project's env.py. The version table is read over the dashboard's
diagnostics connection through `AsyncConnection.run_sync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import Script
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dashboard.db import describe_error
from dashboard.migrations import classify as cl
from dashboard.migrations.catalog import read_schema_warnings
from dashboard.migrations.leftovers import SchemaWarning
from dashboard.migrations.revisions import RevisionFiles, shared_files
from dashboard.migrations.scripts import LoadedScripts, ScriptCache, ScriptError
from dashboard.targets import Target

log = logging.getLogger(__name__)


@dataclass
class RevisionInfo:
    revision: str
    down_revision: str | list[str] | None
    message: str
    date: str | None
    branch_labels: list[str]
    dependencies: list[str]
    is_merge_point: bool
    is_branch_point: bool
    is_head: bool
    irreversible: bool
    irreversible_reason: str | None
    file: str
    file_sha256: str = ""  # what a plan through this revision pins ("" when unreadable)


@dataclass
class MigrationStatus:
    state: str
    explanation: str
    current: list[str]
    heads: list[str]
    pending: list[RevisionInfo] = field(default_factory=list)
    applied: list[RevisionInfo] = field(default_factory=list)
    unknown_current: list[str] = field(default_factory=list)
    multiple_heads: bool = False
    script_errors: list[ScriptError] = field(default_factory=list)
    version_table: str = "alembic_version"
    script_location: str = ""
    read_at: float = 0.0
    # invalid indexes and NOT VALID constraints of the live catalog (catalog.py)
    schema_warnings: list[SchemaWarning] = field(default_factory=list)
    # why schema_warnings is empty although it may not be (the catalog read failed)
    schema_warnings_note: str | None = None

    @property
    def downgrade_blocked(self) -> str | None:
        """Why no downgrade can run from here, or None: the database is at one revision
        and its downgrade() cannot undo it (every downgrade plan starts with it)."""
        if len(self.current) != 1:
            return None
        info = next((r for r in self.applied if r.revision == self.current[0]), None)
        if info is None or not info.irreversible:
            return None
        return (
            f"the current revision {info.revision} cannot be downgraded: "
            f"{_its(info.irreversible_reason or 'its downgrade() cannot undo it')}"
        )

    @property
    def downgrade_stops(self) -> dict[str, str]:
        """Downgrade targets (applied revisions, "base") that cannot be reached, each with
        the irreversible revision in the way: reaching a revision means undoing every
        applied revision built on it (through down_revision or depends_on), so one that
        cannot be undone stops the plan there (as `plan.make_plan` would refuse it)."""
        parents = {r.revision: _parents(r) for r in self.applied}
        stops: dict[str, str] = {}
        for info in self.applied:  # newest first: the first one in the way is named
            if info.irreversible:
                for below in [*_ancestors(info.revision, parents), "base"]:
                    stops.setdefault(below, info.revision)
        return stops

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["pending_count"] = len(self.pending)
        data["downgrade_blocked"] = self.downgrade_blocked
        data["downgrade_stops"] = self.downgrade_stops
        data["schema_warnings"] = [w.to_json() for w in self.schema_warnings]
        return data


def _parents(info: RevisionInfo) -> list[str]:
    down = info.down_revision
    downs = [] if down is None else [down] if isinstance(down, str) else list(down)
    return downs + list(info.dependencies)


def _ancestors(rev: str, parents: dict[str, list[str]]) -> list[str]:
    """Every revision `rev` is built on, within `parents` (not `rev` itself)."""
    seen: dict[str, None] = {}
    todo = list(parents.get(rev, ()))
    while todo:
        r = todo.pop()
        if r not in seen:
            seen[r] = None
            todo.extend(parents.get(r, ()))
    return list(seen)


def _its(reason: str) -> str:
    """A revision file's verdict as the end of a sentence about that revision."""
    if reason.startswith("downgrade()"):
        return f"its {reason}"
    if reason.startswith("no downgrade()"):
        return f"it has {reason}"
    return reason


@dataclass(frozen=True)
class VersionTableRead:
    exists: bool
    current: list[str]


def read_version_table(conn: Connection, target: Target) -> VersionTableRead:
    """Sync: runs inside run_sync. Reads the version table without env.py."""
    exists = inspect(conn).has_table(target.version_table, schema=target.version_table_schema)
    if not exists:
        return VersionTableRead(False, [])
    ctx = MigrationContext.configure(
        conn,
        opts={
            "version_table": target.version_table,
            "version_table_schema": target.version_table_schema,
        },
    )
    return VersionTableRead(True, sorted(ctx.get_current_heads()))


def _down(script: Script) -> str | list[str] | None:
    d = script.down_revision
    if isinstance(d, tuple | list):
        return list(d)
    return d


def revision_info(
    script: Script, heads: list[str], files: RevisionFiles | None = None
) -> RevisionInfo:
    """How one revision is shown; its file is read, hashed and judged by `revisions.py`.

    Reads the file (through the cache): call it off the event loop."""
    record = (files if files is not None else shared_files()).get(script.path)
    module = getattr(script, "module", None)
    date = getattr(module, "create_date", None) if module is not None else None
    if date is None:
        date = _create_date_from_doc(script.longdoc or "")
    return RevisionInfo(
        revision=script.revision,
        down_revision=_down(script),
        message=(script.doc or "").strip(),
        date=str(date) if date else None,
        # only the labels this revision declares (Alembic propagates them to descendants)
        branch_labels=sorted(getattr(script, "_orig_branch_labels", None) or ()),
        dependencies=sorted(script.dependencies or ())
        if isinstance(script.dependencies, tuple | list | set)
        else ([script.dependencies] if script.dependencies else []),
        is_merge_point=bool(script.is_merge_point),
        is_branch_point=bool(script.is_branch_point),
        is_head=script.revision in heads,
        irreversible=record.irreversible,
        irreversible_reason=record.irreversible_reason,
        file=record.file,
        file_sha256=record.sha256,
    )


def _create_date_from_doc(doc: str) -> str | None:
    for line in doc.splitlines():
        if line.strip().lower().startswith("create date:"):
            return line.split(":", 1)[1].strip()
    return None


def build_status(
    loaded: LoadedScripts,
    read: VersionTableRead,
    target: Target,
    files: RevisionFiles | None = None,
) -> MigrationStatus:
    """Given the loaded scripts and the version table contents; reads nothing but the
    revision files (through the `files` cache): call it off the event loop."""
    sd = loaded.directory
    heads = sorted(loaded.heads)
    common = functools.partial(
        MigrationStatus,
        version_table=target.qualified_version_table,
        script_location=str(target.script_location),
        script_errors=list(loaded.errors),
        read_at=time.time(),
    )
    if sd is None:
        return common(
            state=cl.UNINITIALIZED if not read.exists else cl.AHEAD,
            explanation="The migration scripts could not be loaded: "
            + "; ".join(f"{e.file}: {e.error}" for e in loaded.errors),
            current=read.current,
            heads=[],
        )
    rmap = sd.revision_map

    def known(rev: str) -> bool:
        try:
            return rmap.get_revision(rev) is not None
        except Exception:
            return False

    def is_ancestor(a: str, b: str) -> bool:
        try:
            return any(
                r.revision == a for r in rmap.iterate_revisions(b, "base") if r.revision != b
            )
        except Exception:
            return False

    state, explanation = cl.classify(
        has_version_table=read.exists,
        current=read.current,
        heads=heads,
        known=known,
        is_ancestor=is_ancestor,
    )
    pending: list[RevisionInfo] = []
    applied: list[RevisionInfo] = []
    if state in (cl.PENDING, cl.UNINITIALIZED, cl.UP_TO_DATE):
        try:
            pending_scripts = reversed(
                list(sd.iterate_revisions("heads", tuple(read.current), implicit_base=True))
            )
            pending = [revision_info(s, heads, files) for s in pending_scripts]
        except Exception as exc:
            explanation += f" (pending revisions could not be listed: {exc})"
        if read.current:
            try:
                applied = [
                    revision_info(s, heads, files)
                    for s in sd.iterate_revisions(tuple(read.current), "base")
                ]
            except Exception as exc:
                explanation += f" (applied history could not be listed: {exc})"
    unknown = [r for r in read.current if not known(r)]
    if len(heads) > 1:
        explanation += (
            f" The scripts have {len(heads)} heads ({', '.join(heads)}); "
            "a merge revision is usually expected."
        )
    return common(
        state=state,
        explanation=explanation,
        current=read.current,
        heads=heads,
        pending=pending,
        applied=applied,
        unknown_current=unknown,
        multiple_heads=len(heads) > 1,
    )


class StatusService:
    """Reads revision status; one shared, short-lived result for all viewers."""

    def __init__(
        self,
        engine: AsyncEngine,
        target: Target,
        ttl_s: float = 2.0,
        *,
        exclude_schemas: Sequence[str] = ("dashboard",),
    ) -> None:
        self.engine = engine
        self.target = target
        self.ttl_s = ttl_s
        # schemas whose leftovers are not the target's business (the dashboard's own)
        self.exclude_schemas = tuple(exclude_schemas)
        self.scripts = ScriptCache()
        self._lock = asyncio.Lock()
        self._latest: MigrationStatus | None = None
        self._latest_at = 0.0

    def invalidate(self) -> None:
        self._latest_at = 0.0

    async def read(self, *, fresh: bool = False) -> MigrationStatus:
        if not fresh and self._latest and time.monotonic() - self._latest_at < self.ttl_s:
            return self._latest
        async with self._lock:
            if not fresh and self._latest and time.monotonic() - self._latest_at < self.ttl_s:
                return self._latest
            status = await self._read_now()
            self._latest, self._latest_at = status, time.monotonic()
            return status

    async def _read_now(self) -> MigrationStatus:
        loaded = await asyncio.to_thread(self.scripts.load, self.target.script_location)
        async with self.engine.connect() as conn:
            read = await conn.run_sync(read_version_table, self.target)
            warnings, note = await self._schema_warnings(conn)
            if note is None:
                await conn.rollback()
        # The revision files are read (or re-validated) in a worker thread too.
        status = await asyncio.to_thread(build_status, loaded, read, self.target)
        status.schema_warnings, status.schema_warnings_note = warnings, note
        return status

    async def _schema_warnings(
        self, conn: AsyncConnection
    ) -> tuple[list[SchemaWarning], str | None]:
        """The catalog's leftovers, in the same transaction; a failure (privileges, a
        timeout) never breaks the status: an empty list and a note instead."""
        try:
            return await read_schema_warnings(conn, exclude_schemas=self.exclude_schemas), None
        except Exception as exc:
            log.warning("schema warnings could not be read: %s", exc)
            with contextlib.suppress(Exception):
                await conn.rollback()
            return [], f"Schema warnings could not be read: {describe_error(exc)}"


class DatabaseUnavailable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @classmethod
    def from_exc(cls, exc: BaseException) -> DatabaseUnavailable:
        return cls(describe_error(exc))

"""The exact SQL of a plan, rendered in Alembic's offline (`--sql`) mode, and its SHA-256.

No database is touched: Alembic is driven through `EnvironmentContext(as_sql=True)` with
the plan's own steps (never the project's env.py). A revision whose Python reads data
from the database (a batched backfill, say) cannot be fully rendered offline; that is
said in the SQL itself, at the point where rendering stopped, and listed in `warnings`.

Alembic's `op` and `context` proxies are module globals. Rendering runs synchronously on
the event loop thread and restores whatever proxies were installed before, so a
migration running in the same process (paused at an await inside `run_sync`) keeps its
own.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, RevisionStep
from alembic.script import ScriptDirectory

from dashboard.migrations.plan import Plan, build_steps
from dashboard.migrations.revisions import sha256_text as sha256_text  # one SHA-256 of text
from dashboard.targets import Target


@dataclass(frozen=True)
class RenderedSpan:
    """The part of `Preview.sql` one revision's migration function wrote (`sql[start:end]`);
    the rest is Alembic's bookkeeping (BEGIN/COMMIT, the version table)."""

    revision: str
    start: int
    end: int
    error: str | None = None  # what stopped the function offline (it reads data), briefly


@dataclass(frozen=True)
class Preview:
    plan: Plan
    sql: str
    sql_sha256: str
    warnings: list[str] = field(default_factory=list)
    spans: tuple[RenderedSpan, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_json(),
            "sql": self.sql,
            "sql_sha256": self.sql_sha256,
            "warnings": list(self.warnings),
        }


@contextmanager
def preserved_alembic_proxies() -> Iterator[None]:
    """Snapshot and restore the module-global `op` / `context` proxies."""
    missing = object()
    saved: list[tuple[Any, str, Any]] = []
    for cls in (Operations, EnvironmentContext):
        attr_names, modules = cls._setups[cls]
        for globals_, _locals in modules:
            for name in ("_proxy", *attr_names):
                saved.append((globals_, name, globals_.get(name, missing)))
    try:
        yield
    finally:
        for globals_, name, value in saved:
            if value is missing:
                globals_.pop(name, None)
            else:
                globals_[name] = value


def render_preview(sd: ScriptDirectory, plan: Plan, target: Target) -> Preview:
    """Offline SQL for exactly the plan's steps, starting from the plan's `from` heads."""
    buf = io.StringIO()
    warnings: list[str] = []
    spans: list[RenderedSpan] = []
    config = Config(output_buffer=buf)
    config.set_main_option("script_location", str(target.script_location))

    def guarded(step: RevisionStep) -> RevisionStep:
        fn = step.migration_fn
        rev = step.revision.revision
        verb = "upgrade" if step.is_upgrade else "downgrade"

        @functools.wraps(fn)
        def run(**kw: Any) -> None:
            start = len(buf.getvalue())
            try:
                fn(**kw)
            except Exception as exc:
                why = " ".join(f"{type(exc).__name__}: {exc}".split())[:240]
                spans.append(RenderedSpan(rev, start, len(buf.getvalue()), why[:200]))
                note = (
                    f"{verb}() of {rev} could not be rendered past this point offline: it "
                    f"depends on data read from the database ({why}). The statements it "
                    "runs from here on are decided at run time by its Python code."
                )
                warnings.append(note)
                buf.write(f"\n-- !! {note}\n\n")
            else:
                spans.append(RenderedSpan(rev, start, len(buf.getvalue())))

        step.migration_fn = run
        return step

    def fn(rev: Any, context: MigrationContext) -> list[RevisionStep]:
        return [guarded(s) for s in build_steps(sd, plan)]

    with preserved_alembic_proxies():
        with EnvironmentContext(
            config,
            sd,
            fn=fn,
            as_sql=True,
            starting_rev=list(plan.from_heads) or None,
            destination_rev=plan.confirm_value,
        ) as env:
            env.configure(
                dialect_name="postgresql",
                output_buffer=buf,
                literal_binds=True,
                transaction_per_migration=True,
                version_table=target.version_table,
                version_table_schema=target.version_table_schema,
            )
            with env.begin_transaction():
                env.run_migrations()
    sql = buf.getvalue()
    return Preview(
        plan=plan, sql=sql, sql_sha256=sha256_text(sql), warnings=warnings, spans=tuple(spans)
    )

"""Driving Alembic inside `AsyncConnection.run_sync`: exactly a plan's steps, on a
connection that has executed nothing before Alembic is configured on it.

The dashboard drives `EnvironmentContext` itself with `transaction_per_migration=True`,
so Alembic owns and commits one transaction per revision, `autocommit_block()` works,
and the project's env.py (often written for a sync engine) is never executed. Opt-in
(`DASHBOARD_RUN_ENV_PY`): the project's env.py runs, and must use
`config.attributes["connection"]`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, Protocol

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationInfo, RevisionStep
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from dashboard.migrations.plan import Plan, build_steps
from dashboard.migrations.preview import preserved_alembic_proxies
from dashboard.targets import Target


class DatabaseMoved(Exception):
    """The version table is not where the plan starts (checked inside the migration)."""


class EnvPyIgnoresConnection(Exception):
    """In env.py mode, the project's env.py opened a connection of its own."""


class ApplyHooks(Protocol):
    """What the driver reports to (the live run's progress)."""

    def on_step_start(self, revision: str) -> None: ...

    def on_step_end(self, revision: str) -> None:
        """The revision's migration function returned or raised (before Alembic writes
        the version table): statements after this are Alembic's bookkeeping."""

    def on_version_apply(
        self,
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None: ...


class StepGuard(Protocol):
    """Wraps each revision's migration function (the runner's lock retries)."""

    def run_step(self, conn: Connection, call: Callable[[], Any]) -> Any:
        """Run `call` (the revision's function); may run it again after a rollback."""

    def leaving_transaction(self) -> None:
        """The revision enters an autocommit block: Alembic commits its transaction."""


def _short(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


def _instrument(
    step: RevisionStep, hooks: ApplyHooks, conn: Connection, guard: StepGuard | None
) -> RevisionStep:
    fn = step.migration_fn
    revision = step.revision.revision

    @functools.wraps(fn)
    def run(**kw: Any) -> Any:
        hooks.on_step_start(revision)
        try:
            if guard is None:
                return fn(**kw)
            return guard.run_step(conn, lambda: fn(**kw))
        finally:
            hooks.on_step_end(revision)

    step.migration_fn = run
    return step


def _guard_autocommit(context: MigrationContext, guard: StepGuard) -> None:
    """Tell the guard before Alembic commits a revision's transaction to enter an
    autocommit block (its savepoint must be released first)."""
    original = context.autocommit_block

    @contextlib.contextmanager
    def autocommit_block() -> Iterator[None]:
        guard.leaving_transaction()
        with original():
            yield

    context.autocommit_block = autocommit_block  # type: ignore[method-assign]


def drive_alembic(
    conn: Connection,
    *,
    sd: ScriptDirectory,
    plan: Plan,
    target: Target,
    hooks: ApplyHooks,
    run_env_py: bool,
    guard: StepGuard | None = None,
) -> None:
    """Sync, inside `AsyncConnection.run_sync`: run exactly the plan's steps on `conn`."""
    config = Config()
    config.set_main_option("script_location", str(target.script_location))
    config.attributes["connection"] = conn
    steps = build_steps(sd, plan)

    def fn(heads: Any, context: MigrationContext) -> list[RevisionStep]:
        if sorted(heads) != list(plan.from_heads):
            raise DatabaseMoved(
                f"the version table reads {', '.join(sorted(heads)) or 'nothing'}, "
                f"not {plan.from_label}"
            )
        if guard is not None:
            _guard_autocommit(context, guard)
        return [_instrument(s, hooks, conn, guard) for s in steps]

    env = EnvironmentContext(config, sd, fn=fn, destination_rev=plan.confirm_value)
    configured: list[bool] = []
    if run_env_py:
        original = env.configure

        def configure(**kw: Any) -> None:
            configured.append(True)
            if kw.get("connection") is not conn:
                raise EnvPyIgnoresConnection(
                    "the project's env.py did not use config.attributes['connection']; "
                    "it opens its own connection, which the dashboard cannot guard. "
                    "Turn DASHBOARD_RUN_ENV_PY off (the default) to let the dashboard drive "
                    "the scripts itself."
                )
            theirs = kw.get("on_version_apply") or []
            theirs = list(theirs) if isinstance(theirs, list | tuple) else [theirs]
            kw["on_version_apply"] = [*theirs, hooks.on_version_apply]
            original(**kw)

        env.configure = configure  # type: ignore[method-assign,assignment]
    with preserved_alembic_proxies(), env:
        if run_env_py:
            try:
                sd.run_env()
            except EnvPyIgnoresConnection:
                raise
            except Exception as exc:
                if configured:
                    raise
                raise EnvPyIgnoresConnection(
                    "the project's env.py failed before it configured Alembic "
                    f"({type(exc).__name__}: {_short(str(exc), 200)}); in env.py mode it "
                    "must use config.attributes['connection']. Turn DASHBOARD_RUN_ENV_PY off "
                    "(the default) to let the dashboard drive the scripts itself."
                ) from exc
        else:
            env.configure(
                connection=conn,
                target_metadata=None,
                transaction_per_migration=True,
                version_table=target.version_table,
                version_table_schema=target.version_table_schema,
                on_version_apply=hooks.on_version_apply,
            )
            with env.begin_transaction():
                env.run_migrations()

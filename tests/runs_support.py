"""Shared helpers for the runner tests: revisions added to a private demo_scripts copy,
polling a run to its end, and a RunService wired like the app wires it."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from dashboard.approvals.service import Approvals
from dashboard.auth.identity import Identity
from dashboard.runs.service import RunService
from dashboard.settings import Settings
from dashboard.state import model as sm
from dashboard.state.store import StateStore
from dashboard.targets import Target

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "alembic"
BASE = "8b2e4d6f1a02"
MERGE = "e6fa04b5c905"
ENUM_REV = "f70b15c6da06"
CIC_REV = "0a1c26d7eb07"
BACKFILL = "1b2d37e8fc08"
HEAD = "2c3e48f90d09"

# The demo's backfill revision reads rows and decides what to UPDATE: its review marks it
# data-dependent, and a plan containing it needs this explicit acknowledgement (on the
# request when no approval is required, on the approval otherwise).
ACK_REASON = "backfill reviewed: it only updates customers.order_count"
ACK_BACKFILL: list[dict[str, str]] = [
    {"revision": BACKFILL, "rule": "data-dependent", "reason": ACK_REASON}
]
# The same acknowledgement as the HTML forms send it (checkbox `ack`, textarea `ack_reason`).
ACK_BACKFILL_FORM: dict[str, str] = {"ack": f"data-dependent|{BACKFILL}|", "ack_reason": ACK_REASON}


def sleep_sql(seconds: float) -> str:
    """`SELECT pg_sleep(...)` that sleeps in a real run but not in the review's rehearsal
    (which runs the plan for real on a scratch `dashboard_rehearsal_*` database, and would
    otherwise sleep as long before the request is even recorded)."""
    return (
        "SELECT pg_sleep(CASE WHEN starts_with(current_database(), 'dashboard_rehearsal_') "
        f"THEN 0 ELSE {seconds} END)"
    )


def add_revision(
    scripts: Path, rev: str, down: str | None, upgrade: str, downgrade: str = "pass"
) -> None:
    body = f'''"""test revision {rev}

Revision ID: {rev}
Revises: {down or ""}
Create Date: 2026-11-22 10:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{textwrap.indent(textwrap.dedent(upgrade).strip(), "    ")}


def downgrade() -> None:
{textwrap.indent(textwrap.dedent(downgrade).strip(), "    ")}
'''
    (scripts / "versions" / f"{rev}_test.py").write_text(body)


def make_settings(url: str, scripts: Path = DEMO, **over: Any) -> Settings:
    s = Settings(
        database_url=url, script_location=scripts, require_approval=False, auth_mode="none"
    )
    return s.with_overrides(**over) if over else s


@asynccontextmanager
async def running_runner(
    url: str, scripts: Path = DEMO, *, schema: str = "dashboard", **over: Any
) -> AsyncIterator[RunService]:
    settings = make_settings(url, scripts, dashboard_schema=schema, **over)
    state = StateStore(url, schema)
    runner = RunService(settings, Target.from_settings(settings), url, state)
    await state.start()
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()
        await state.stop()


async def wait_done(runner: RunService, run_id: int, within_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        run = await runner.get(run_id)
        if run["status"] in sm.TERMINAL:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {within_s}s: {run}")
        await asyncio.sleep(0.05)


async def wait_for(
    runner: RunService, run_id: int, pred: Any, within_s: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        run = await runner.get(run_id)
        if pred(run):
            return run
        if run["status"] in sm.TERMINAL or time.monotonic() > deadline:
            raise AssertionError(f"condition never held for run {run_id}: {run}")
        await asyncio.sleep(0.05)


REQUESTER = Identity(name="tester", role="operator", address="127.0.0.1")
APPROVER = Identity(name="second-pair-of-eyes", role="approver", address="127.0.0.1")


async def approve_and_execute(
    runner: RunService, run_id: int, acknowledge: object = None
) -> dict[str, Any]:
    """The four-eyes rule (downgrades always need it): another person approves (with
    `acknowledge`, e.g. ACK_BACKFILL, when the plan has a data-dependent revision), the
    requester executes."""
    service = Approvals(runner)
    await service.approve(run_id, APPROVER, acknowledge=acknowledge)
    return await service.execute(run_id, REQUESTER)

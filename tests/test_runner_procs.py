"""Separate dashboard processes: two racing for the same target (exactly one runs), and a
process killed with SIGKILL mid-run (after a restart the run is `interrupted` and the
database is consistent)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from tests.migrate import alembic_to
from tests.runs_support import HEAD, add_revision, running_runner, sleep_sql, wait_done

ROOT = Path(__file__).resolve().parent.parent

RACER = r"""
import asyncio, json, sys, time
from pathlib import Path
from dashboard.runs.errors import RunError
from tests.runs_support import running_runner, wait_done

url, scripts, schema, start_at, head = sys.argv[1:6]

async def main():
    async with running_runner(url, Path(scripts), schema=schema) as runner:
        await asyncio.sleep(max(0.0, float(start_at) - time.time()))
        try:
            row = await runner.request(actor=schema + "-user", address=None,
                                       direction="upgrade", target="heads",
                                       expected_current=[head])
        except RunError as exc:
            print(json.dumps({"refused": exc.message}))
            return
        run = await wait_done(runner, row.id, 60)
        print(json.dumps({"id": run["id"], "status": run["status"], "error": run["error"]}))

asyncio.run(main())
"""

VICTIM = r"""
import asyncio, sys
from pathlib import Path
from tests.runs_support import running_runner

url, scripts, head = sys.argv[1:4]

async def main():
    async with running_runner(url, Path(scripts)) as runner:
        row = await runner.request(actor="victim", address=None, direction="upgrade",
                                   target="heads", expected_current=[head])
        print(row.id, flush=True)
        await asyncio.sleep(120)

asyncio.run(main())
"""


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("schemas", [("dashboard", "dashboard"), ("dash_a", "dash_b")])
async def test_two_processes_race_exactly_one_runs(
    db_url: str, plain_db_url: str, demo_scripts: Path, schemas: tuple[str, str]
) -> None:
    add_revision(demo_scripts, "gg01slow0001", HEAD, "op.execute('SELECT pg_sleep(1.5)')")
    await alembic_to(db_url, demo_scripts, HEAD)
    start_at = str(time.time() + 4.0)
    procs = [spawn(RACER, db_url, str(demo_scripts), s, start_at, HEAD) for s in schemas]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    succeeded = [o for o in outputs if o.get("status") == "succeeded"]
    others = [o for o in outputs if o.get("status") != "succeeded"]
    assert len(succeeded) == 1, outputs
    loser = others[0]
    # refused at request time (409), or refused at start by the advisory lock
    text = loser.get("refused") or loser.get("error") or ""
    assert "is in progress" in text or "moved" in text or "not at" in text, outputs
    conn = await asyncpg.connect(plain_db_url)
    try:
        assert await conn.fetch("SELECT version_num FROM alembic_version") == [("gg01slow0001",)]
        ran = 0
        for schema in set(schemas):
            ran += await conn.fetchval(
                f"SELECT count(*) FROM {schema}.runs WHERE started_at IS NOT NULL"
            )
        assert ran == 1
    finally:
        await conn.close()


async def test_sigkill_mid_run_then_restart_marks_interrupted(
    db_url: str, plain_db_url: str, demo_scripts: Path
) -> None:
    add_revision(
        demo_scripts,
        "hh01sleep001",
        HEAD,
        f"""
        op.execute('CREATE TABLE half_applied (id int)')
        op.execute({sleep_sql(60)!r})
        """,
    )
    await alembic_to(db_url, demo_scripts, HEAD)
    proc = spawn(VICTIM, db_url, str(demo_scripts), HEAD)
    conn = await asyncpg.connect(plain_db_url)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            row = None
            if await conn.fetchval("SELECT to_regclass('dashboard.runs') IS NOT NULL"):
                row = await conn.fetchrow(
                    "SELECT id, status, progress->>'current_statement' AS stmt FROM dashboard.runs"
                )
            if row and row["status"] == "running" and "pg_sleep" in (row["stmt"] or ""):
                break
            assert time.monotonic() < deadline, "the run never reached its long statement"
            await asyncio.sleep(0.1)
        run_id = row["id"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # restart: a new dashboard process (here: a new runner) recovers at start-up
        async with running_runner(db_url, demo_scripts) as runner:
            run = await wait_done(runner, run_id, 5)
            assert run["status"] == "interrupted"
            assert run["verified_revs"] == [HEAD]
            assert "interrupted" in run["error"] and HEAD in run["error"]
            assert run["error_detail"]["terminated_backend"] is True
        # consistent: the half-applied revision left nothing, no orphan is still running
        assert await conn.fetch("SELECT version_num FROM alembic_version") == [(HEAD,)]
        assert await conn.fetchval("SELECT to_regclass('half_applied') IS NULL")
        orphans = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'dashboard-%' AND query LIKE '%pg_sleep%'"
        )
        assert orphans == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        await conn.close()

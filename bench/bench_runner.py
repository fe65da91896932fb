"""Runner vs `alembic upgrade head`: wall time on fresh databases, verification included.

Two chains: the demo schema (alembic/, 8 revisions with a branch, a merge, an enum
ADD VALUE and a CREATE INDEX CONCURRENTLY) and a generated linear chain of 200
revisions. For each chain and repetition, one fresh database is upgraded by the
dashboard's runner (request -> plan -> SQL preview -> lock -> run -> proof of commit on a
fresh connection, durable run + log rows) and another by the `alembic upgrade head`
command (a subprocess, as an operator would run it, through the demo async env.py),
followed by the same version-table check on a fresh connection.

    DASHBOARD_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        .venv/bin/python bench/bench_runner.py [--reps 3] [--revisions 200]

Without DASHBOARD_TEST_DATABASE_URL an embedded server (pgserver) is started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dashboard.runs.service import RunService  # noqa: E402
from dashboard.settings import Settings  # noqa: E402
from dashboard.state.store import StateStore  # noqa: E402
from dashboard.targets import Target  # noqa: E402

ALEMBIC = Path(sys.executable).parent / "alembic"


@contextmanager
def server_url() -> Iterator[str]:
    env = os.environ.get("DASHBOARD_TEST_DATABASE_URL") or os.environ.get(
        "DASHBOARD_BENCH_DATABASE_URL"
    )
    if env:
        yield env
        return
    import pgserver

    server = pgserver.get_server(ROOT / ".bench-pg", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def url_for(server: str, db: str, driver: str) -> str:
    return (
        make_url(server).set(drivername=driver, database=db).render_as_string(hide_password=False)
    )


async def create_db(server: str) -> str:
    name = "bench_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(url_for(server, "postgres", "postgresql"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_db(server: str, name: str) -> None:
    conn = await asyncpg.connect(url_for(server, "postgres", "postgresql"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def read_versions(server: str, db: str) -> list[str]:
    conn = await asyncpg.connect(url_for(server, db, "postgresql"))
    try:
        return sorted(r[0] for r in await conn.fetch("SELECT version_num FROM alembic_version"))
    finally:
        await conn.close()


def generate_chain(dest: Path, n: int) -> tuple[Path, str]:
    """A linear chain of `n` revisions (tables, columns, indexes, data), demo env.py."""
    shutil.copytree(
        ROOT / "alembic", dest, ignore=shutil.ignore_patterns("__pycache__", "versions")
    )
    versions = dest / "versions"
    versions.mkdir()
    down: str | None = None
    rev = ""
    for i in range(n):
        rev = f"g{i:04d}{uuid.uuid4().hex[:7]}"
        kind = i % 4
        if kind == 0 or i < 4:
            up = (
                f"op.create_table('t{i}', sa.Column('id', sa.Integer, primary_key=True), "
                f"sa.Column('name', sa.Text))"
            )
            dn = f"op.drop_table('t{i}')"
        elif kind == 1:
            t = i - 1
            up = f"op.add_column('t{t}', sa.Column('c{i}', sa.Integer, server_default='0'))"
            dn = f"op.drop_column('t{t}', 'c{i}')"
        elif kind == 2:
            t = i - 2
            up = f"op.create_index('ix_t{t}_name', 't{t}', ['name'])"
            dn = f"op.drop_index('ix_t{t}_name', table_name='t{t}')"
        else:
            t = i - 3
            # generated revision source (table names are ours), not SQL run from here
            up = f"op.execute(\"INSERT INTO t{t} (name) SELECT 'n' || g FROM generate_series(1, 50) g\")"  # noqa: S608
            dn = f"op.execute('DELETE FROM t{t}')"  # noqa: S608
        (versions / f"{rev}_step_{i}.py").write_text(
            f'''"""generated step {i}

Revision ID: {rev}
Revises: {down or ""}
Create Date: 2026-11-22 00:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    {up}


def downgrade() -> None:
    {dn}
'''
        )
        down = rev
    return dest, rev


# The demo's backfill revision is data-dependent: a run that queues at once (no approval
# rule here) carries the requester's acknowledgement of it, as the confirmation page asks.
DEMO_ACK = [{"revision": "1b2d37e8fc08", "rule": "data-dependent", "reason": "bench"}]


async def time_runner(
    server: str, scripts: Path, head: str, acknowledge: object = None
) -> tuple[float, float]:
    """(request to proven end, the run alone: lock, apply, proof of commit). The request
    includes the review's rehearsal of the whole plan on a scratch database."""
    db = await create_db(server)
    url = url_for(server, db, "postgresql+asyncpg")
    try:
        settings = Settings(database_url=url, script_location=scripts, require_approval=False)
        state = StateStore(url, "dashboard")
        await state.ensure()  # the dashboard creates its schema at start-up, not per run
        runner = RunService(settings, Target.from_settings(settings), url, state)
        t0 = time.perf_counter()
        row = await runner.request(
            actor="bench",
            address=None,
            direction="upgrade",
            target="heads",
            expected_current=[],
            acknowledge=acknowledge,
        )
        await runner.wait(row.id, 600)
        run = await runner.get(row.id, with_log=False)
        elapsed = time.perf_counter() - t0
        if run["status"] != "succeeded" or run["verified_revs"] != [head]:
            raise SystemExit(f"runner run failed: {run['status']} {run['error']}")
        await runner.stop()
        await state.stop()
        return elapsed, float(run["duration_s"])
    finally:
        await drop_db(server, db)


async def time_cli(server: str, scripts: Path, head: str) -> float:
    db = await create_db(server)
    url = url_for(server, db, "postgresql+asyncpg")
    with tempfile.TemporaryDirectory() as tmp:
        ini = Path(tmp) / "alembic.ini"
        ini.write_text(f"[alembic]\nscript_location = {scripts}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
        env["DASHBOARD_DATABASE_URL"] = url
        try:
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                str(ALEMBIC),
                "-c",
                str(ini),
                "upgrade",
                "head",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"alembic upgrade head failed: {err.decode()[-2000:]}")
            versions = await read_versions(server, db)  # the same proof, fresh connection
            elapsed = time.perf_counter() - t0
            if versions != [head]:
                raise SystemExit(f"alembic CLI left the database at {versions}")
            return elapsed
        finally:
            await drop_db(server, db)


async def bench_chain(
    server: str, label: str, scripts: Path, head: str, reps: int, acknowledge: object = None
) -> float:
    runner_t: list[float] = []
    run_t: list[float] = []
    cli_t: list[float] = []
    await time_runner(server, scripts, head, acknowledge)  # warm-up: imports, connections
    for _ in range(reps):
        cli_t.append(await time_cli(server, scripts, head))
        total, run_only = await time_runner(server, scripts, head, acknowledge)
        runner_t.append(total)
        run_t.append(run_only)
    r, c, o = statistics.median(runner_t), statistics.median(cli_t), statistics.median(run_t)
    ratio = o / c
    print(
        f"{label:<28} run {o:7.3f} s   alembic CLI {c:7.3f} s   ratio {ratio:5.2f}   "
        f"(request incl. the review's rehearsal, to proven end: {r:.3f} s, ratio {r / c:.2f};"
        f" median of {reps}; run {', '.join(f'{x:.3f}' for x in run_t)};"
        f" CLI {', '.join(f'{x:.3f}' for x in cli_t)})"
    )
    return ratio


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--revisions", type=int, default=200)
    args = ap.parse_args()
    with server_url() as server, tempfile.TemporaryDirectory() as tmp:
        print("upgrade to head on fresh databases, verification included")
        demo_ratio = await bench_chain(
            server,
            "demo chain (8 revisions)",
            ROOT / "alembic",
            "2c3e48f90d09",
            args.reps,
            DEMO_ACK,
        )
        chain, head = generate_chain(Path(tmp) / "gen", args.revisions)
        gen_ratio = await bench_chain(
            server, f"generated chain ({args.revisions})", chain, head, args.reps
        )
        worst = max(demo_ratio, gen_ratio)
        print(
            f"worst run/CLI ratio {worst:.2f} (target <= 1.0): {'OK' if worst <= 1.0 else 'OVER'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

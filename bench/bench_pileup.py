"""A migration behind a long reader, while readers keep arriving: how long do they wait?

A long reader holds ACCESS SHARE on a table (an open transaction that read it). The
dashboard's runner starts a migration that needs ACCESS EXCLUSIVE on it (ALTER TABLE ...
ADD COLUMN) and queues behind the reader. Meanwhile 20 sessions arrive at the table, one
every 200 ms, each running a plain SELECT and timing it. The long reader ends after
`--reader-s` seconds.

Two configurations, side by side in one run, each on its own fresh database:
- before: one attempt with a fixed lock_timeout (what the runner did until now), no watchdog;
- after: lock retries (DASHBOARD_LOCK_RETRIES, backoff 0.5 s doubling to 10 s) and the
  pile-up watchdog (DASHBOARD_PILEUP_MAX_WAITERS / _MAX_WAIT_MS), the defaults.

Printed per configuration: the arrivals' worst and median wait, whether the migration
landed, how long after the reader ended it did, and the backoff step it was in; and the
watchdog's own cost (statements per second while it watched, mean time per statement).

    DASHBOARD_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/bench_pileup.py [--rounds 3] [--reader-s 6]

Without DASHBOARD_TEST_DATABASE_URL an embedded server (pgserver) is started.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_runner import create_db, drop_db, server_url, url_for  # noqa: E402

from dashboard.runs.service import RunService  # noqa: E402
from dashboard.settings import Settings  # noqa: E402
from dashboard.state.model import TERMINAL  # noqa: E402
from dashboard.state.store import StateStore  # noqa: E402
from dashboard.targets import Target  # noqa: E402

ARRIVALS = 20
ARRIVAL_EVERY_S = 0.2
LOCK_TIMEOUT_MS = 3000

REVISION = '''"""bench: a column on a busy table

Revision ID: {rev}
Revises: {down}
Create Date: 2026-11-30 04:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
'''


def scripts(dest: Path) -> Path:
    versions = dest / "versions"
    versions.mkdir(parents=True)
    (dest / "script.py.mako").write_text("")
    create = "op.execute('CREATE TABLE busy (id int PRIMARY KEY, v text)')\n"
    create += "op.execute(\"INSERT INTO busy SELECT g, 'x' FROM generate_series(1, 1000) g\")"
    alter = "op.add_column('busy', sa.Column('note', sa.Text))"
    for rev, down, body in (("b0001", None, create), ("b0002", "b0001", alter)):
        text = REVISION.format(rev=rev, down=down, body=textwrap.indent(body, "    "))
        (versions / f"{rev}.py").write_text(text)
    return dest


@dataclass
class Outcome:
    label: str
    waits: list[float]
    status: str
    attempts: int
    landed_after_reader_s: float | None
    backoff_step_s: float | None
    watchdog: dict[str, Any] | None


async def one(server: str, root: Path, label: str, reader_s: float, **over: Any) -> Outcome:
    db = await create_db(server)
    url = url_for(server, db, "postgresql+asyncpg")
    plain = url_for(server, db, "postgresql")
    conns: list[asyncpg.Connection] = []
    try:
        settings = Settings(
            database_url=url,
            script_location=root,
            require_approval=False,
            lock_timeout_ms=LOCK_TIMEOUT_MS,
        ).with_overrides(**over)
        state = StateStore(url, "dashboard")
        await state.ensure()
        runner = RunService(settings, Target.from_settings(settings), url, state)
        await runner.start()
        first = await runner.request(
            actor="bench", address=None, direction="upgrade", target="b0001", expected_current=[]
        )
        await runner.wait(first.id, 60)
        reader = await asyncpg.connect(plain, server_settings={"application_name": "long-reader"})
        conns.append(reader)
        arrivals = [
            await asyncpg.connect(plain, server_settings={"application_name": f"arrival-{i}"})
            for i in range(ARRIVALS)
        ]
        conns.extend(arrivals)
        await reader.execute("BEGIN; SELECT count(*) FROM busy")
        row = await runner.request(
            actor="bench",
            address=None,
            direction="upgrade",
            target="b0002",
            expected_current=["b0001"],
        )

        async def arrive(i: int, conn: asyncpg.Connection) -> float:
            await asyncio.sleep(0.3 + i * ARRIVAL_EVERY_S)
            t0 = time.monotonic()
            await conn.fetchval("SELECT count(*) FROM busy")
            return time.monotonic() - t0

        async def end_reader() -> float:
            await asyncio.sleep(reader_s)
            await reader.execute("COMMIT")
            return time.monotonic()

        async def finished() -> float:
            while (await runner.get(row.id, with_log=False))["status"] not in TERMINAL:
                await asyncio.sleep(0.02)
            return time.monotonic()

        results = await asyncio.gather(
            end_reader(), finished(), *(arrive(i, c) for i, c in enumerate(arrivals))
        )
        reader_ended, done_at = float(results[0]), float(results[1])
        waits = [float(w) for w in results[2:]]
        run = await runner.get(row.id)
        landed = done_at - reader_ended if run["status"] == "succeeded" else None
        steps = [
            float(e["message"].rsplit("retrying in ", 1)[1].split(" s")[0])
            for e in run["log"]
            if e["event"] == "lock_retry"
        ]
        await runner.stop()
        await state.stop()
        return Outcome(
            label,
            waits,
            run["status"],
            int(run["progress"].get("attempts") or 1),
            landed,
            steps[-1] if steps else None,
            run["progress"].get("watchdog"),
        )
    finally:
        for c in conns:
            await c.close()
        await drop_db(server, db)


def show(o: Outcome) -> None:
    worst, median = max(o.waits), statistics.median(o.waits)
    landed = f"{o.landed_after_reader_s:+.2f} s" if o.landed_after_reader_s is not None else "-"
    step = f"{o.backoff_step_s:.2f} s" if o.backoff_step_s is not None else "-"
    wd = o.watchdog or {}
    print(
        f"  {o.label:<7} worst wait {worst * 1000:7.0f} ms  median {median * 1000:6.0f} ms  "
        f"{o.status:<9} attempts {o.attempts}  landed after reader ended {landed} "
        f"(last backoff step {step})  watchdog {wd.get('looks_per_s', 0)} statements/s, "
        f"{wd.get('mean_look_ms', 0)} ms each, {wd.get('cancels', 0)} cancel(s)"
    )


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reader-s", type=float, default=6.0)
    args = ap.parse_args()
    defaults = Settings()
    limit_ms = defaults.pileup_max_wait_ms
    print(
        f"long reader {args.reader_s:.1f} s, {ARRIVALS} arrivals every {ARRIVAL_EVERY_S} s, "
        f"lock_timeout {LOCK_TIMEOUT_MS} ms; after = {defaults.lock_retries} attempts, watchdog at "
        f"{defaults.pileup_max_waiters} waiters or {limit_ms} ms"
    )
    worst_before: list[float] = []
    worst_after: list[float] = []
    with server_url() as server, tempfile.TemporaryDirectory() as tmp:
        root = scripts(Path(tmp) / "alembic")
        for r in range(args.rounds):
            print(f"round {r + 1}")
            before = await one(
                server,
                root,
                "before",
                args.reader_s,
                lock_retries=1,
                pileup_max_waiters=10**6,
                pileup_max_wait_ms=10**9,
            )
            show(before)
            after = await one(server, root, "after", args.reader_s)
            show(after)
            worst_before.append(max(before.waits))
            worst_after.append(max(after.waits))
    wb, wa = statistics.median(worst_before), statistics.median(worst_after)
    print(
        f"median worst wait: before {wb * 1000:.0f} ms, after {wa * 1000:.0f} ms "
        f"(target < {limit_ms + 500} ms); ratio after/before {wa / wb:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

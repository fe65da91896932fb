"""The migration worker: Python work of revisions and offline renders runs on its own
thread and loop, so the loop that serves pages keeps turning while they compute."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dashboard.runs.worker import MigrationWorker
from tests.migrate import alembic_to
from tests.runs_support import HEAD, add_revision, running_runner, wait_done


def busy(seconds: float) -> int:
    """Pure Python work holding the GIL (a backfill loop)."""
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        n += sum(i * i for i in range(100))
    return n


async def longest_stall(work: asyncio.Future[Any]) -> float:
    """The longest this loop went without running, in seconds, while `work` was pending."""
    worst, last = 0.0, time.monotonic()
    while not work.done():
        await asyncio.sleep(0.01)
        now = time.monotonic()
        worst, last = max(worst, now - last), now
    return worst


async def test_sync_work_runs_on_the_worker_thread_and_the_loop_keeps_turning() -> None:
    worker = MigrationWorker()
    try:
        here = threading.get_ident()
        where = await worker.call(threading.get_ident)
        assert where != here
        before = sys.getswitchinterval()
        work = asyncio.ensure_future(worker.call(busy, 2.0))
        stall = await longest_stall(work)
        assert await work > 0
        # On the serving loop itself the loop would be frozen for the whole 2 s.
        assert stall < 1.0, stall
        assert sys.getswitchinterval() == before  # restored once the worker is idle
    finally:
        worker.stop()


async def test_errors_come_back_and_a_cancelled_wait_cancels_the_job() -> None:
    worker = MigrationWorker()
    try:

        def fail() -> None:
            raise ValueError("from the worker")

        with pytest.raises(ValueError, match="from the worker"):
            await worker.call(fail)
        started = threading.Event()
        finished = threading.Event()

        async def long() -> None:
            started.set()
            await asyncio.sleep(30)
            finished.set()

        job = asyncio.ensure_future(worker.run(long))
        await asyncio.to_thread(started.wait, 5)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert not finished.is_set()
        assert await worker.call(lambda: 41 + 1) == 42  # still serving
    finally:
        worker.stop()


async def test_a_revision_computing_in_python_leaves_the_loop_free(
    db_url: str, demo_scripts: Path
) -> None:
    add_revision(
        demo_scripts,
        "cc01python01",
        HEAD,
        """
        import time
        t0, n = time.monotonic(), 0
        while time.monotonic() - t0 < 2.0:
            n += sum(i * i for i in range(100))
        op.execute("SELECT 1")
        """,
    )
    await alembic_to(db_url, demo_scripts, HEAD)
    async with running_runner(db_url, demo_scripts) as runs:
        row = await runs.request(
            actor="t", address=None, direction="upgrade", target="heads", expected_current=[HEAD]
        )
        job = asyncio.ensure_future(wait_done(runs, row.id, 60))
        stall = await longest_stall(job)
        run = await job
        assert run["status"] == "succeeded", run["error"]
        assert run["log"][-1]["event"] == "succeeded"
        # run_sync on this loop would have frozen it for the revision's 2 s
        assert stall < 1.0, stall

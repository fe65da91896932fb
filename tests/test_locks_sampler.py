"""The sampler: one per process, viewers never make it query, and it cannot get stuck in a
lock queue (its statements carry a tight lock_timeout)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.lock_chain import Pile, app_for, refresh


async def test_viewers_do_not_make_the_sampler_query(db_url: str) -> None:
    app = app_for(db_url)
    async with AsyncTestClient(app) as client:
        await refresh(client)
        sampler = app.state.dashboard.sampler
        cycles, statements = sampler.cycles, sampler.statements
        for _ in range(10):
            for path in ("/locks", "/api/locks", "/activity", "/api/activity", "/"):
                r = await client.get(path)
                assert r.status_code == 200, path
        assert (sampler.cycles, sampler.statements) == (cycles, statements)
        assert len([s for s in app.state.dashboard.services if s is sampler]) == 1


async def test_a_catalog_lock_makes_the_sampler_fail_fast_not_hang(
    db_url: str, plain_db_url: str
) -> None:
    app = app_for(db_url)
    async with Pile(plain_db_url) as pile, AsyncTestClient(app) as client:
        before = await refresh(client)
        locker = await pile.session("catalog-locker")
        # Everything that plans a query touching pg_class now queues behind this.
        await locker.execute("BEGIN; LOCK TABLE pg_catalog.pg_class IN ACCESS EXCLUSIVE MODE")
        t = time.monotonic()
        with pytest.raises(Exception) as info:
            await refresh(client)
        elapsed = time.monotonic() - t
        assert elapsed < 2.0, elapsed  # lock_timeout 200 ms, not the 5 s statement timeout
        assert "lock" in str(info.value).lower()

        sampler = app.state.dashboard.sampler
        assert sampler.latest is before  # the last good sample is kept
        body: dict[str, Any] = (await client.get("/api/locks")).json()
        assert body["sampler"]["ok"] is False and "lock" in body["sampler"]["error"].lower()
        page = await client.get("/locks")
        assert "Sampling pg_stat_activity failed" in page.text

        await locker.execute("ROLLBACK")
        await asyncio.sleep(0)
        after = await refresh(client)
        assert after is not before and sampler.status()["ok"] is True

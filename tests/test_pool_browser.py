"""End to end in headless Chromium: the Pool page during a real exhaustion.

The "application" runs in its own thread and event loop: it holds every connection of a
pool_size=2 / max_overflow=1 pool (one idle in a transaction holding a row lock, one
blocked on that lock, one idle) and queues six more tasks behind them; one times out.
The dashboard, served by uvicorn in another thread, must show all of it live.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dashboard.app import create_app
from dashboard.pool import instrument_of
from dashboard.settings import Settings
from tests.browser import browser_page, screenshot
from tests.live_server import live_server

pytestmark = pytest.mark.browser

POOL_TIMEOUT_S = 6.0
# The other requests queue once the first checkout has waited this long (by the pool's own
# clock): only the first reaches POOL_TIMEOUT_S. The page then has POOL_TIMEOUT_S - STAGGER_S
# to see all six waiting, and STAGGER_S after the timeout to see it before the release.
STAGGER_S = 3.5
LINES: dict[str, int] = {}


def here() -> int:
    return sys._getframe(1).f_lineno


async def until(cond: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"workload: {what} not reached in {timeout_s:g} s")
        await asyncio.sleep(0.02)


class Workload:
    """The application under pressure, in a thread with its own loop."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.exhausted = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()
        self.outcomes: list[str] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="workload", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.done.set()

    async def _wait_release(self) -> None:
        while not self.release.is_set():
            await asyncio.sleep(0.05)

    async def _waiter(self) -> None:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            self.outcomes.append("served")
        except sa_exc.TimeoutError:
            self.outcomes.append("timed out")

    async def _main(self) -> None:
        eng = self.engine
        async with eng.begin() as conn:
            await conn.execute(text("CREATE TABLE orders (id int PRIMARY KEY, total int)"))
            await conn.execute(text("INSERT INTO orders VALUES (1, 10)"))
        locker, LINES["locker"] = await eng.connect(), here()
        await locker.execute(text("UPDATE orders SET total = total + 1 WHERE id = 1"))
        blocked, LINES["blocked"] = await eng.connect(), here()
        stuck = asyncio.create_task(
            blocked.execute(text("UPDATE orders SET total = total * 2 WHERE id = 1"))
        )
        idle, LINES["idle"] = await eng.connect(), here()
        pool = instrument_of(eng)  # attached by create_app
        if pool is None:
            raise AssertionError("the engine is not instrumented")
        first = asyncio.create_task(self._waiter(), name="checkout-that-times-out")
        await until(
            lambda: pool.waiting() == 1 and pool.longest_wait() >= STAGGER_S,
            f"first checkout queued for {STAGGER_S:g} s",
        )
        rest = [asyncio.create_task(self._waiter(), name=f"request-{i}") for i in range(5)]
        await until(lambda: pool.waiting() == 6, "six checkouts queued")
        self.exhausted.set()
        await first
        await self._wait_release()
        await locker.rollback()
        await stuck
        await blocked.rollback()
        for c in (locker, blocked, idle):
            await c.close()
        await asyncio.gather(*rest)
        await eng.dispose()


@contextmanager
def workload(engine: AsyncEngine) -> Iterator[Workload]:
    w = Workload(engine)
    w.thread.start()
    try:
        yield w
    finally:
        w.release.set()
        w.thread.join(timeout=30)


def test_pool_page_during_exhaustion(db_url: str) -> None:
    engine = create_async_engine(
        db_url,
        pool_size=2,
        max_overflow=1,
        pool_timeout=POOL_TIMEOUT_S,
        connect_args={"server_settings": {"application_name": "shop-api"}},
    )
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_SAMPLE_INTERVAL_S": "1",
            "DASHBOARD_LEAK_THRESHOLD_S": "5",
        }
    )
    app = create_app(settings, engines={"main": engine})
    with live_server(app) as base, browser_page() as page, workload(engine) as w:
        assert w.exhausted.wait(20), w.error
        page.goto(base + "/pool")
        card = page.locator("#pool-main")
        card.locator(".pool-headline.pool-alarm").wait_for(timeout=10_000)
        page.wait_for_function(
            "document.querySelector('#pool-main').dataset.waiting === '6'", timeout=10_000
        )
        assert card.get_attribute("data-checked-out") == "3"
        rows = page.locator("#pool-main .pool-ledger tbody tr")
        assert rows.count() == 3
        text_ = page.locator("#pool-main .pool-ledger").inner_text()
        for key in ("locker", "blocked", "idle"):
            assert f"tests/test_pool_browser.py:{LINES[key]}" in text_
        # joined with the server (the sampler runs every second)
        page.wait_for_function(
            "document.querySelector('#pool-main .pool-ledger').innerText.includes('lock held by pid')",
            timeout=10_000,
        )
        assert "idle in transaction" in page.locator("#pool-main .pool-ledger").inner_text()

        # the first waiter times out: counter, freeze-frame, still 5 waiting
        page.locator("#pool-frames .pool-frame").first.wait_for(timeout=15_000)
        page.wait_for_function(
            "document.querySelector('#pool-main').dataset.timeouts === '1'", timeout=10_000
        )
        assert card.get_attribute("data-waiting") == "5"
        page.wait_for_function(
            "document.querySelectorAll('#pool-main .pool-ledger .tag-danger').length === 3",
            timeout=10_000,
        )  # every holder is past the 5 s leak threshold
        shot = screenshot(page, "pool-exhausted")
        assert shot.exists()
        page.emulate_media(color_scheme="dark")  # the 3 am view
        screenshot(page, "pool-exhausted-dark")
        assert page.locator(".pool-chart polyline.pool-line-used").count() == 1

        # release before the other five reach their own pool_timeout
        w.release.set()
        assert w.done.wait(30), "workload did not finish"
        assert w.error is None, w.error
        assert sorted(w.outcomes) == ["served"] * 5 + ["timed out"]

        # the freeze-frame page (a copy taken at the timeout) names the holders and the lock
        page.locator("#pool-frames a", has_text="open").first.click()
        page.wait_for_url(base + "/pool/freeze/*")
        frame_text = page.locator("main").inner_text()
        assert "checkout(s) timed out" in frame_text
        assert f"tests/test_pool_browser.py:{LINES['locker']}" in frame_text
        screenshot(page, "pool-freeze-frame")

        # everything drains back to idle
        page.goto(base + "/pool")
        page.wait_for_function(
            "document.querySelector('#pool-main').dataset.checkedOut === '0'", timeout=10_000
        )
        assert page.locator("#pool-main .pool-headline").inner_text() == "Connections available"
        # the backends the pool just closed are not mistaken for another process's
        assert "No other backend uses" in page.locator("#pool-main .pool-others").inner_text()
        screenshot(page, "pool-idle")

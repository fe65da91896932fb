"""The Overview cards and the Pool page never mislead: real PostgreSQL, headless Chromium.

1. A lock pile-up whose waiters are the application's own pool connections (an observed
   engine, pool_size=5 / max_overflow=2, running blocked UPDATEs from a thread of its
   own): the Pool card is not green -- "5 of 7 in use, 5 stuck in a lock pile-up" -- and,
   once the pool is full and callers queue, it is an alarm and the Pool page lists the
   waiting tasks with the line they wait at.
2. The database goes away (the app talks to it through a TCP proxy that is stopped): the
   cards say "unknown -- database unreachable", never green.

Each page is looked at 1400 and 390 px wide, dark and light, without horizontal overflow
of the document; the screenshots are in artifacts/.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from dashboard.app import create_app
from dashboard.pool import instrument_of
from dashboard.settings import Settings
from tests.browser import Page, browser_page, screenshot
from tests.live_server import live_server
from tests.tcp_proxy import ThreadedPgProxy

pytestmark = pytest.mark.browser

APP_NAME = "overview-pileup-test"
LINES: dict[str, int] = {}
SIZES = ((1400, 1000), (390, 900))
SCHEMES = ("dark", "light")


def here() -> int:
    return sys._getframe(1).f_lineno


async def until(cond: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"workload: {what} not reached in {timeout_s:g} s")
        await asyncio.sleep(0.02)


class Pileup:
    """The application, in a thread with its own loop: one pool connection holds a row
    lock, four more wait for it (stage 1); then two more (the pool is full) and two
    callers queue for a connection (stage 2); then everything is released."""

    def __init__(self, engine: AsyncEngine, plain_url: str) -> None:
        self.engine = engine
        self.plain_url = plain_url
        self.stage1 = threading.Event()
        self.go_stage2 = threading.Event()
        self.stage2 = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="pileup", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.done.set()

    async def _lock_waiters(self, admin: asyncpg.Connection) -> int:
        return int(
            await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = $1 AND wait_event_type = 'Lock'",
                APP_NAME,
            )
        )

    async def _until_lock_waiters(self, admin: asyncpg.Connection, n: int) -> None:
        deadline = time.monotonic() + 20
        while await self._lock_waiters(admin) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"workload: {n} lock waiters not reached")
            await asyncio.sleep(0.05)

    async def _wait_event(self, event: threading.Event) -> None:
        while not event.is_set():
            await asyncio.sleep(0.05)

    async def _blocked(self, conns: list[AsyncConnection]) -> list[asyncio.Task[Any]]:
        return [
            asyncio.create_task(
                c.execute(text("UPDATE accounts SET balance = balance + 1 WHERE id = 1"))
            )
            for c in conns
        ]

    async def _queued_caller(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def _main(self) -> None:
        eng = self.engine
        admin = await asyncpg.connect(self.plain_url)
        try:
            async with eng.begin() as conn:
                await conn.execute(text("CREATE TABLE accounts (id int PRIMARY KEY, balance int)"))
                await conn.execute(text("INSERT INTO accounts VALUES (1, 100)"))
            locker = await eng.connect()
            await locker.execute(text("UPDATE accounts SET balance = balance - 1 WHERE id = 1"))
            first = [await eng.connect() for _ in range(4)]
            stmts = await self._blocked(first)
            await self._until_lock_waiters(admin, 4)
            self.stage1.set()

            await self._wait_event(self.go_stage2)
            more = [await eng.connect() for _ in range(2)]  # the overflow: 7 of 7
            stmts += await self._blocked(more)
            await self._until_lock_waiters(admin, 6)
            pool = instrument_of(eng)
            assert pool is not None, "the engine is not instrumented"
            callers = [
                asyncio.create_task(self._queued_caller(), name=f"checkout-{i}") for i in range(2)
            ]
            LINES["queued"] = self._queued_caller.__code__.co_firstlineno + 1
            await until(lambda: pool.waiting() == 2, "two callers queued for a connection")
            self.stage2.set()

            await self._wait_event(self.release)
            await locker.rollback()
            # each UPDATE gets the row in turn and holds it until its transaction ends
            pending = dict(zip(stmts, [*first, *more], strict=True))
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    await pending.pop(t).rollback()
            for c in (locker, *first, *more):
                await c.close()
            await asyncio.gather(*callers)
        finally:
            await admin.close()
            await eng.dispose()


@contextmanager
def pileup(engine: AsyncEngine, plain_url: str) -> Iterator[Pileup]:
    w = Pileup(engine, plain_url)
    w.thread.start()
    try:
        yield w
    finally:
        w.release.set()
        w.go_stage2.set()
        w.thread.join(timeout=30)


def no_overflow(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def look(page: Page, name: str, check: Callable[[Page], None] | None = None) -> None:
    """At both widths, dark and light: no horizontal overflow; `check`; a screenshot each."""
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        for scheme in SCHEMES:
            page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => r(null)))")
            assert no_overflow(page), f"{name} overflows at {width} px ({scheme}): " + str(
                page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
            )
            if check is not None:
                check(page)
            screenshot(page, f"{name}-{width}-{scheme}")
    page.set_viewport_size({"width": SIZES[0][0], "height": SIZES[0][1]})


NOW_LABEL_INSIDE = """() => {
    const svgs = [...document.querySelectorAll(
        '#pool-main svg.pool-chart, #pool-main svg.pool-minichart')]
        .filter(s => s.getBoundingClientRect().width > 0);
    if (svgs.length !== 1) return 'visible charts: ' + svgs.length;
    const svg = svgs[0];
    const now = [...svg.querySelectorAll('text')].find(t => t.textContent === 'now');
    const a = now.getBoundingClientRect(), b = svg.getBoundingClientRect();
    if (a.right > b.right + 0.5 || a.left < b.left) return 'now label clipped';
    const titles = [...svg.querySelectorAll('text.pool-chart-title')].map(t => t.textContent);
    if (titles.join('|') !== 'connections in use|callers waiting for a connection')
        return titles.join('|');
    const px = parseFloat(getComputedStyle(now).fontSize) * b.width / svg.viewBox.baseVal.width;
    return px >= 9 ? 'ok' : 'labels drawn at ' + px.toFixed(1) + ' px';
}"""


def chart_reads_well(page: Page) -> None:
    """One chart shown, titled (the unit), its "now" label inside, its text readable."""
    assert page.evaluate(NOW_LABEL_INSIDE) == "ok"


def card_state(page: Page, selector: str) -> str | None:
    return page.locator(selector).get_attribute("data-card-state")


def wait_state(
    page: Page, selector: str, states: tuple[str, ...], timeout_ms: int = 15_000
) -> None:
    js = (
        "([sel, states]) => { const el = document.querySelector(sel);"
        " return !!el && states.includes(el.dataset.cardState); }"
    )
    page.wait_for_function(js, arg=[selector, list(states)], timeout=timeout_ms)


def test_overview_and_pool_page_during_a_pileup_of_pool_connections(
    db_url: str, plain_db_url: str
) -> None:
    engine = create_async_engine(
        db_url,
        pool_size=5,
        max_overflow=2,
        pool_timeout=60,
        connect_args={"server_settings": {"application_name": APP_NAME}},
    )
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_SAMPLE_INTERVAL_S": "1",
        }
    )
    app = create_app(settings, engines={"main": engine})
    with (
        live_server(app) as base,
        browser_page() as page,
        pileup(engine, plain_db_url) as w,
    ):
        assert w.stage1.wait(30), w.error

        # --- stage 1: 5 of 7 connections stuck, nobody queued yet -------------------
        page.goto(base + "/")
        page.wait_for_function(
            "() => document.querySelector('#pool-card [data-pool=\"main\"]')?.dataset.stuck === '5'",
            timeout=15_000,
        )
        pool_card = page.locator("#pool-card")
        assert card_state(page, "#pool-card") == "warn"
        row = page.locator('#pool-card [data-pool="main"]')
        assert row.get_attribute("data-card-state") == "warn"
        assert "5 of 7 in use, 5 stuck in a lock pile-up" in pool_card.inner_text()
        assert "connections available" not in pool_card.inner_text().lower()
        assert "4 waiting for a lock · 1 holding a lock others wait for" in pool_card.inner_text()
        wait_state(page, "#locks-card", ("alarm",))
        # (the sampler sees the whole server: other databases' waits count too)
        verdict = page.locator("#locks-card .card-verdict").inner_text()
        assert verdict.endswith(" waiting on locks") and int(verdict.split()[0]) >= 4, verdict
        # every card says when its figures were taken
        for sel in ("#schema-card", "#locks-card", "#pool-card"):
            sampled = page.locator(f"{sel} .card-sampled")
            assert sampled.count() == 1, sel
            assert "UTC" in sampled.inner_text(), sel
        assert "lock state from the server sample" in pool_card.inner_text()
        look(page, "overview-pileup")

        page.goto(base + "/pool")
        card = page.locator("#pool-main")
        page.wait_for_function(
            "() => document.querySelector('#pool-main')?.dataset.stuck === '5'", timeout=15_000
        )
        assert card.get_attribute("data-card-state") == "warn"
        assert card.get_attribute("data-checked-out") == "5"
        headline = card.locator(".pool-headline").inner_text()
        assert headline.endswith("5 of 7 in use, 5 stuck in a lock pile-up"), headline
        assert "Connections available" not in headline
        assert "timed out since start (" in card.inner_text()
        assert "No caller is waiting." in card.inner_text()
        # the chart: in use and waiting in separate bands, each titled with its unit, the
        # "now" label inside the picture, readable text (at both widths)
        look(page, "pool-pileup", chart_reads_well)

        # --- stage 2: the pool is full and two callers queue -----------------------
        w.go_stage2.set()
        assert w.stage2.wait(30), w.error
        page.wait_for_function(
            "() => document.querySelector('#pool-main')?.dataset.waiting === '2'"
            " && document.querySelectorAll('#pool-main .pool-waiter').length === 2",
            timeout=15_000,
        )
        assert card.get_attribute("data-card-state") == "alarm"
        waiters = page.locator("#pool-main .pool-waiter")
        assert sorted(waiters.nth(i).get_attribute("data-task") or "" for i in range(2)) == [
            "checkout-0",
            "checkout-1",
        ]
        listed = page.locator("#pool-main table.pool-waiters").inner_text()
        assert f"tests/test_overview_states_pg.py:{LINES['queued']}" in listed
        assert "UTC" in listed  # waiting since
        page.wait_for_function(
            "() => document.querySelector('#pool-main')?.dataset.stuck === '7'", timeout=15_000
        )
        look(page, "pool-pileup-queued", chart_reads_well)
        # the JSON twins say the same
        api = page.request.get(base + "/api/pool").json()["pools"][0]
        assert sorted(w["task"] for w in api["waiters"]) == ["checkout-0", "checkout-1"]
        assert all(w["origin_frame"]["line"] == LINES["queued"] for w in api["waiters"])
        assert api["counting_since"] and api["wait_histogram"]
        cards = page.request.get(base + "/api/overview").json()["cards"]
        assert cards["pool"]["state"] == "alarm"
        assert cards["pool"]["pools"][0]["stuck"]["total"] == 7

        page.goto(base + "/")
        wait_state(page, "#pool-card", ("alarm",))
        text_ = page.locator("#pool-card").inner_text()
        assert "2 waiting for a connection" in text_ and "7 of 7 in use" in text_
        screenshot(page, "overview-pileup-queued")

        w.release.set()
        assert w.done.wait(30), "the workload did not finish"
        assert w.error is None, w.error


def test_cards_say_unknown_when_the_database_is_down(pg_server_url: str, db_name: str) -> None:
    proxy = ThreadedPgProxy(pg_server_url)
    proxy.start()
    try:
        settings = Settings.from_env(
            {
                "DASHBOARD_DATABASE_URL": proxy.url(db_name),
                "DASHBOARD_AUTH_MODE": "none",
                "DASHBOARD_SAMPLE_INTERVAL_S": "1",
            }
        )
        with live_server(create_app(settings)) as base, browser_page() as page:
            page.goto(base + "/")
            # up: the pool is idle and green; the other cards are sampled
            wait_state(page, "#pool-card", ("ok",))
            assert "connections available" in page.locator("#pool-card").inner_text()
            # (other databases' lock waits on the same server may make it an alarm)
            wait_state(page, "#locks-card", ("ok", "warn", "alarm"))
            assert card_state(page, "#schema-card") != "unknown"

            proxy.stop()
            page.reload()
            for card in ("#schema-card", "#locks-card", "#pool-card"):
                wait_state(page, card, ("unknown",))
            pool_text = page.locator("#pool-card").inner_text()
            assert "unknown — database unreachable" in pool_text
            assert "connections available" not in pool_text.lower()
            assert "in this process; the database cannot be reached" in pool_text
            locks_text = page.locator("#locks-card").inner_text()
            assert "unknown — database unreachable" in locks_text
            assert "No lock waits" not in locks_text
            assert "unknown — database unreachable" in page.locator("#schema-card").inner_text()
            # nothing green on the cards of this page's own areas
            assert page.locator('.overview-card[data-card-state="ok"]').count() == 0
            assert page.locator(".overview-card .card-verdict-ok").count() == 0
            look(page, "overview-db-down")
            cards = page.request.get(base + "/api/overview").json()["cards"]
            assert {k: v["state"] for k, v in cards.items()} == {
                "schema": "unknown",
                "locks": "unknown",
                "pool": "unknown",
            }

            # the htmx refresh keeps saying so
            page.wait_for_function(
                "() => document.querySelector('#pool-card .card-sampled')?.dataset.sampledAt !== "
                f"'{page.locator('#pool-card .card-sampled').get_attribute('data-sampled-at')}'",
                timeout=15_000,
            )
            assert card_state(page, "#pool-card") == "unknown"
            # and brings the page's banner up to date with it
            assert "Database unreachable" in page.locator("#banners").inner_text()

            page.goto(base + "/pool")
            assert page.locator("#pool-main").get_attribute("data-card-state") == "unknown"
            assert "database unreachable" in page.locator("#pool-main .pool-headline").inner_text()
            look(page, "pool-db-down", chart_reads_well)
    finally:
        proxy.close()

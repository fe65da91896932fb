"""Every page at 390 px and 1400 px wide, dark and light, with real data on it: the demo
schema and rows, a succeeded and a failed run (its blockers table), a lock pile-up with
long queries (some held through the application's own pool), an incident and the audit
trail. No page may be wider than the window: a wide table scrolls inside its card.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from dashboard.app import create_app
from dashboard.demo.seed import migrate_to_start
from dashboard.settings import Settings
from tests.browser import Page, chromium, screenshot
from tests.live_server import live_server
from tests.lock_chain import Pile
from tests.runs_support import BASE
from tests.waiting import wait_until

pytestmark = pytest.mark.browser
T = TypeVar("T")

CATALOG = "c4d8e1f2a903"  # create_products: runs while nothing holds a lock
ORDERS = "d5e9f3a4b804"  # ALTER TABLE orders: fails behind the pile-up's lock on orders
PAGES = ("/", "/migrations", "/locks", "/activity", "/pool", "/runs", "/audit", "/incidents")
WIDTHS = (390, 1400)
SCHEMES: tuple[Literal["dark", "light"], ...] = ("dark", "light")
# A query as ORMs write them: long, and with an IN list that has no space to wrap at.
IN_LIST = ",".join(str(i) for i in range(1, 121))
LONG_QUERY = (
    "UPDATE orders SET total_cents = total_cents + 1, status = 'paid' "
    f"WHERE id = 1 AND customer_id IN ({IN_LIST}) "
    "AND EXISTS (SELECT 1 FROM customers c WHERE c.id = orders.customer_id "
    "AND c.email LIKE 'customer%@example.com')"
)


class LoopThread:
    """An event loop in a thread: the application's sessions live there while the
    (synchronous) browser drives the pages."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Held:
    """The application's side of the pile-up: pool connections and raw sessions."""

    engine: AsyncEngine
    pile: Pile
    conns: list[AsyncConnection]
    tasks: list[asyncio.Task[Any]]


async def pile_up(engine: AsyncEngine, plain_url: str) -> Held:
    """A pool connection idle in a transaction that locked an order row; another pool
    connection and three raw sessions queued behind it with long queries."""
    pile = Pile(plain_url)
    await pile.__aenter__()
    root = await engine.connect()
    await root.execute(text("UPDATE orders SET total_cents = total_cents WHERE id = 1"))
    blocked = await engine.connect()
    tasks: list[asyncio.Task[Any]] = [asyncio.ensure_future(blocked.execute(text(LONG_QUERY)))]
    for i in range(3):
        waiter = await pile.session(f"checkout-worker-{i}")
        await pile.block(waiter, LONG_QUERY)
    return Held(engine, pile, [root, blocked], tasks)


async def release(held: Held) -> None:
    await held.pile.__aexit__(None, None, None)  # terminates the raw sessions
    root, blocked = held.conns
    await root.rollback()  # the lock goes: the pool connection queued behind it finishes
    await asyncio.gather(*held.tasks, return_exceptions=True)
    await blocked.rollback()
    for conn in held.conns:
        await conn.close()
    await held.engine.dispose()


def request_run(client: httpx.Client, target: str, current: list[str]) -> int:
    token = client.cookies.get("csrftoken")
    r = client.post(
        "/api/runs",
        json={"direction": "upgrade", "target": target, "expected_current": current},
        headers={"x-csrftoken": str(token)},
        timeout=60,
    )
    assert r.status_code == 202, r.text
    return int(r.json()["id"])


def run_ends(client: httpx.Client, run_id: int) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
        return body if body["status"] not in ("queued", "running", "awaiting_approval") else None

    return wait_until(ended, timeout_s=60, interval_s=0.2, what=f"run {run_id} to end")


@dataclass(frozen=True)
class Scene:
    base: str
    succeeded: int
    failed: int


@contextmanager
def scene(db_url: str, plain_db_url: str, scripts: Path) -> Iterator[Scene]:
    asyncio.run(migrate_to_start(db_url, scripts))
    engine = create_async_engine(
        db_url,
        pool_size=3,
        max_overflow=0,
        connect_args={"server_settings": {"application_name": "shop-api"}},
    )
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_REQUIRE_APPROVAL": "false",
            "DASHBOARD_SCRIPT_LOCATION": str(scripts),
            "DASHBOARD_SAMPLE_INTERVAL_S": "1",
            "DASHBOARD_INCIDENT_MIN_BLOCKED": "2",
            "DASHBOARD_INCIDENT_MIN_S": "1",
            "DASHBOARD_LOCK_TIMEOUT_MS": "200",
            "DASHBOARD_LOCK_RETRIES": "1",
        }
    )
    lt = LoopThread()
    held: Held | None = None
    try:
        with live_server(create_app(settings, engines={"main": engine})) as base:
            with httpx.Client(base_url=base, timeout=30) as client:
                client.get("/runs")  # the CSRF cookie
                ok = request_run(client, CATALOG, [BASE])
                assert run_ends(client, ok)["status"] == "succeeded"
                held = lt.run(pile_up(engine, plain_db_url))
                failed = request_run(client, ORDERS, [CATALOG])
                assert run_ends(client, failed)["status"] == "failed"
                wait_until(
                    lambda: client.get("/api/incidents").json()["incidents"],
                    timeout_s=30,
                    interval_s=0.3,
                    what="the pile-up to be recorded as an incident",
                )
            yield Scene(base, ok, failed)
    finally:
        if held is not None:
            lt.run(release(held))
        lt.close()


def overflow(page: Page) -> dict[str, Any]:
    """How far the document is wider than the window, and the widest offenders."""
    result: dict[str, Any] = page.evaluate(
        """() => {
          const doc = document.documentElement;
          const limit = window.innerWidth;
          const wide = [];
          for (const el of document.querySelectorAll('main *')) {
            const r = el.getBoundingClientRect();
            if (r.right > limit + 0.5 && r.width > 0) {
              let scroller = false;
              for (let p = el.parentElement; p && p !== doc; p = p.parentElement) {
                const s = getComputedStyle(p);
                if (s.overflowX === 'auto' || s.overflowX === 'scroll' || s.overflowX === 'hidden') {
                  scroller = true; break;
                }
              }
              if (!scroller) wide.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
                (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\\s+/).join('.') : '') +
                ' right=' + Math.round(r.right));
            }
          }
          return {scrollWidth: doc.scrollWidth, innerWidth: limit, wide: wide.slice(0, 8)};
        }"""
    )
    return result


def test_every_page_fits_narrow_and_wide_screens(
    db_url: str, plain_db_url: str, demo_scripts: Path
) -> None:
    problems: list[str] = []
    with scene(db_url, plain_db_url, demo_scripts) as s, chromium() as browser:
        pages = (*PAGES, f"/runs/{s.succeeded}", f"/runs/{s.failed}")
        for scheme in SCHEMES:
            for width in WIDTHS:
                context = browser.new_context(
                    viewport={"width": width, "height": 900}, color_scheme=scheme
                )
                page = context.new_page()
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                for path in pages:
                    page.goto(s.base + path)
                    page.wait_for_load_state("networkidle")
                    if path == f"/runs/{s.failed}":
                        assert page.locator("#run-blockers").count() == 1
                    name = "root" if path == "/" else path.strip("/").replace("/", "-")
                    screenshot(page, f"narrow-{name}-{width}-{scheme}")
                    found = overflow(page)
                    if found["scrollWidth"] > found["innerWidth"]:
                        problems.append(f"{path} at {width} px ({scheme}): {found}")
                context.close()
    assert not problems, "\n".join(problems)

"""End to end in headless Chromium during a real pile-up: the Locks page shows the root
blocker first, with its blast radius; terminating it (typed confirmation) clears it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from dashboard.app import create_app
from dashboard.settings import Settings
from tests.browser import browser_page, screenshot
from tests.live_server import live_server
from tests.lock_chain import Pile

pytestmark = pytest.mark.browser
T = TypeVar("T")


class LoopThread:
    """An event loop in a thread: the asyncpg sessions of the pile-up live there while the
    (synchronous) browser test drives the page."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def pile_up(pile: Pile) -> dict[str, int]:
    """A long transaction, a migration queued behind it, readers and a writer queued
    behind the migration; and an unrelated second root with one waiter."""
    await pile.sql(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance int);"
        "INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 10) g;"
        "CREATE TABLE audit_log (at timestamptz DEFAULT now(), what text)"
    )
    root = await pile.session("billing-api")
    await root.execute("BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1")
    migration = await pile.session("alembic")
    await pile.block(migration, "ALTER TABLE accounts ADD COLUMN note text")
    for i in range(3):
        reader = await pile.session(f"web-{i}")
        await pile.block(reader, f"SELECT balance FROM accounts WHERE id = {i + 2}")
    writer = await pile.session("payments-worker")
    await pile.block(writer, "UPDATE accounts SET balance = 0 WHERE id = 7")
    report = await pile.session("cron-report")
    await report.execute("BEGIN; LOCK TABLE audit_log IN SHARE MODE")
    ingest = await pile.session("ingest")
    await pile.block(ingest, "INSERT INTO audit_log (what) VALUES ('x')")
    return {"root": root.get_server_pid(), "report": report.get_server_pid()}


@contextmanager
def running_pile(plain_db_url: str) -> Iterator[tuple[LoopThread, dict[str, int], Pile]]:
    lt = LoopThread()
    pile = Pile(plain_db_url)
    lt.run(pile.__aenter__())
    try:
        pids = lt.run(pile_up(pile))
        yield lt, pids, pile
    finally:
        lt.run(pile.__aexit__(None, None, None))
        lt.close()


def test_locks_page_shows_the_root_blocker_and_terminates_it(
    db_url: str, plain_db_url: str
) -> None:
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_SAMPLE_INTERVAL_S": "1",
            "DASHBOARD_LONG_QUERY_S": "1",
        }
    )
    with (
        running_pile(plain_db_url) as (lt, pids, pile),
        live_server(create_app(settings)) as base,
        browser_page((1400, 1000)) as page,
    ):
        root = pids["root"]
        page.goto(base + "/locks")
        page.wait_for_selector(f"#root-{root}", timeout=10_000)
        cards = page.locator("section.locks-root")
        assert cards.count() == 2
        first = cards.first
        assert first.get_attribute("data-root-pid") == str(root)  # biggest blast radius first
        assert first.locator(".locks-blast-n").inner_text().strip() == "5"
        assert "billing-api" in first.inner_text()
        assert "idle in transaction" in first.inner_text()
        assert "ALTER TABLE accounts" in first.locator("table.locks-tree").inner_text()
        assert cards.nth(1).get_attribute("data-root-pid") == str(pids["report"])
        summary = page.locator(".locks-summary")
        assert summary.get_attribute("data-blocked-count") == "6"
        page.wait_for_timeout(1500)  # ages move on; one polling round has swapped the panel
        page.emulate_media(color_scheme="dark")  # 3 am, dark room
        screenshot(page, "locks-pileup")
        page.emulate_media(color_scheme="light")
        screenshot(page, "locks-pileup-light")
        page.emulate_media(color_scheme="dark")

        page.goto(base + "/")
        card = page.locator("#locks-card")
        card.wait_for()
        assert card.get_attribute("data-blocked-count") == "6"
        assert f"pid {root}" in card.inner_text()
        screenshot(page, "overview-locks-card")

        page.goto(base + "/activity")
        page.wait_for_selector("#budget")
        assert page.locator(f'#idle-in-transaction tr[data-pid="{root}"]').count() == 1
        screenshot(page, "activity-pileup")

        # Terminate the root from the Locks page, with the typed confirmation.
        page.goto(base + "/locks")
        page.locator(f"#root-{root} button", has_text="Terminate…").click()
        confirm = page.locator("#backend-confirm")
        confirm.wait_for()
        button = confirm.get_by_role("button", name=f"Terminate pid {root}")
        assert button.is_disabled()
        confirm.locator("input[name=confirm]").fill(str(root + 1))
        assert button.is_disabled()
        confirm.locator("input[name=confirm]").fill(str(root))
        assert button.is_enabled()
        screenshot(page, "locks-confirm-terminate")
        button.click()
        result = page.locator(".locks-result")
        result.wait_for()
        assert result.get_attribute("data-outcome") == "terminated", result.inner_text()
        page.wait_for_selector(f"#root-{root}", state="detached", timeout=10_000)
        assert not lt.run(pile.alive(root))
        remaining = page.locator("section.locks-root")
        assert remaining.count() == 1
        assert remaining.first.get_attribute("data-root-pid") == str(pids["report"])
        screenshot(page, "locks-after-terminate")

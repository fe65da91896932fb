"""End to end in headless Chromium: from the Migrations page, preview a plan, confirm it
by typing the target revision, watch the run live, cancel a long one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dashboard.app import create_app
from dashboard.settings import Settings
from tests.browser import browser_page, screenshot
from tests.live_server import live_server
from tests.migrate import alembic_to
from tests.runs_support import HEAD, add_revision

pytestmark = pytest.mark.browser


def test_confirm_run_watch_and_cancel(db_url: str, demo_scripts: Path) -> None:
    add_revision(demo_scripts, "zz01sleep001", HEAD, "op.execute('SELECT pg_sleep(30)')")
    asyncio.run(alembic_to(db_url, demo_scripts, "1b2d37e8fc08"))
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_REQUIRE_APPROVAL": "false",
            "DASHBOARD_SCRIPT_LOCATION": str(demo_scripts),
            # the review would rehearse the 30 s revision: stop it after 2 s and review
            # the offline render instead (the review then says it is not exact)
            "DASHBOARD_REHEARSAL_TIMEOUT_S": "2",
        }
    )
    problems: list[str] = []
    with live_server(create_app(settings)) as base, browser_page() as page:
        page.on(
            "console",
            lambda m: (
                problems.append(m.text)
                if m.type == "error" and "status of 404" not in m.text
                else None
            ),
        )
        page.on(
            "response",
            lambda r: (
                problems.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico")
                else None
            ),
        )
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(base + "/migrations")
        page.locator("#action-upgrade-one").click()
        page.wait_for_url("**/runs/new**")
        assert page.locator("#plan-to").inner_text().strip() == HEAD
        assert page.locator("[data-irreversible]").count() == 1
        assert "DROP COLUMN legacy_phone" in page.locator("#plan-sql").inner_text()
        sha = page.locator("#sql-sha256").inner_text().strip()
        button = page.locator("button[data-confirm-input='confirm-target']")
        assert button.is_disabled()
        page.locator("#confirm-target").fill(HEAD[:6])
        assert button.is_disabled()
        page.locator("#confirm-target").fill(HEAD)
        assert button.is_enabled()
        screenshot(page, "runs-confirm")
        button.click()
        page.wait_for_url("**/runs/1")
        page.locator("#run-panel[data-status='succeeded']").wait_for(timeout=15000)
        verified = page.locator("#run-verified").inner_text()
        assert HEAD in verified and "confirmed on a fresh connection" in verified
        assert sha[:12] in page.locator("#run-panel").inner_text()
        screenshot(page, "runs-succeeded")

        # a long revision: watch it live, then cancel it
        page.goto(base + "/runs/new?direction=upgrade&target=heads")
        page.locator("#confirm-target").fill("zz01sleep001")
        page.locator("button[data-confirm-input='confirm-target']").click()
        page.wait_for_url("**/runs/2")
        page.locator("#run-current-statement:has-text('pg_sleep')").wait_for(timeout=15000)
        assert page.locator("#run-done").inner_text() == "0"
        screenshot(page, "runs-live")
        page.locator("#run-cancel").click()
        page.locator("#run-panel[data-status='cancelled']").wait_for(timeout=15000)
        error = page.locator("#run-error").inner_text()
        assert "cancelled by local" in error and HEAD in error
        # the log grew by appending: the lines written after the page loaded arrive once
        page.locator("#run-log li[data-event='cancelled']").wait_for(timeout=15000)
        assert page.locator("#run-log-new li[data-event='cancel_requested']").count() == 1
        assert page.locator("#run-log li[data-event='requested']").count() == 1
        assert page.locator("#run-log li[data-event='cancelled']").count() == 1
        screenshot(page, "runs-cancelled")

        page.goto(base + "/runs")
        rows: Any = page.locator("tr[data-run-id]")
        assert rows.count() == 2
        page.goto(base + "/")
        assert "run 2" in page.locator("#runs-card").inner_text().lower()
    assert problems == []

"""End to end in headless Chromium: a person opens the overview and reads where the
schema stands."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dashboard.app import create_app
from dashboard.settings import Settings
from tests.browser import browser_page, screenshot
from tests.live_server import live_server
from tests.migrate import alembic_to

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.browser


def test_overview_shows_pending_migrations(db_url: str) -> None:
    asyncio.run(alembic_to(db_url, ROOT / "alembic", "8b2e4d6f1a02"))
    settings = Settings.from_env({"DASHBOARD_DATABASE_URL": db_url, "DASHBOARD_AUTH_MODE": "none"})
    with live_server(create_app(settings)) as base, browser_page() as page:
        page.goto(base + "/")
        card = page.locator("#schema-card")
        assert card.locator("[data-state]").inner_text().strip() == "Migrations pending"
        assert page.locator("#current-revisions").inner_text().strip() == "8b2e4d6f1a02"
        assert page.locator("#head-revisions").inner_text().strip() == "2c3e48f90d09"
        assert page.locator("#pending-count").inner_text().strip() == "7"
        assert "Authentication is disabled" in page.locator("#banners").inner_text()
        screenshot(page, "overview")

        page.get_by_role("link", name="Migrations", exact=True).click()
        page.wait_for_url(base + "/migrations")
        rows = page.locator("#pending tbody tr")
        assert rows.count() == 7
        assert rows.last.get_attribute("data-revision") == "2c3e48f90d09"
        assert "irreversible" in rows.last.inner_text()
        screenshot(page, "migrations")
        page.emulate_media(color_scheme="dark")
        screenshot(page, "migrations-dark")

        # the nav reaches the other areas' pages
        for name in ("Locks", "Pool"):
            page.get_by_role("link", name=name, exact=True).click()
            assert page.locator("h1").inner_text() == name

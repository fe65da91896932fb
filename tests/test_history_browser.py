"""The history chart on the Locks page in headless Chromium, at desktop and phone widths:
it loads with its range links, switches range in place, and never overflows the page."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from dashboard.app import create_app
from dashboard.settings import Settings
from tests.browser import browser_page, screenshot
from tests.live_server import live_server
from tests.waiting import wait_until

pytestmark = pytest.mark.browser


def no_horizontal_overflow(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_locks_page_shows_the_history_chart_with_range_links(db_url: str) -> None:
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_SAMPLE_INTERVAL_S": "0.5",
        }
    )
    with live_server(create_app(settings)) as base:

        def written() -> bool:
            r = httpx.get(f"{base}/api/history?series=locks&range=15m", timeout=5)
            return r.status_code == 200 and len(r.json()["points"]) >= 2

        wait_until(written, timeout_s=20, interval_s=0.25, what="samples written by the writer")
        for width, height in ((1400, 900), (390, 844)):
            with browser_page((width, height)) as page:
                page.goto(base + "/locks")
                chart = page.locator("#history-locks svg.hist-chart")
                chart.wait_for(timeout=10_000)
                section = page.locator("#history-locks")
                assert section.get_attribute("data-range") == "1h"
                links = section.locator("a.hist-range")
                assert links.all_inner_texts() == ["15m", "1h", "6h", "24h", "7d"]
                assert int(chart.get_attribute("data-points") or 0) >= 1
                assert "UTC" in section.inner_text()
                assert no_horizontal_overflow(page), f"horizontal overflow at {width}px"
                box = chart.bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
                links.filter(has_text="24h").click()
                page.wait_for_selector('#history-locks[data-range="24h"]', timeout=10_000)
                assert page.locator("#history-locks a.hist-range-active").inner_text() == "24h"
                assert page.locator("#locks-panel").count() == 1  # the live panel is untouched
                assert no_horizontal_overflow(page), f"horizontal overflow at {width}px (24h)"
                page.emulate_media(color_scheme="dark")
                screenshot(page, f"history-locks-{width}")
                page.emulate_media(color_scheme="light")
                screenshot(page, f"history-locks-{width}-light")

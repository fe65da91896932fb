"""Password mode in headless Chromium, dark and light, at 1400 and 390 px: before sign-in the
page shows only the product name and the sign-in form (no navigation, no "anonymous ·
viewer"); a signed-in viewer is told why action buttons are missing (Migrations: upgrades
need operator; Locks: cancel needs operator, terminate needs admin), an operator only what
it still lacks; an error page is in the layout. No horizontal overflow anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest

from dashboard.app import create_app
from dashboard.auth import users
from dashboard.settings import Settings
from tests.browser import chromium, screenshot
from tests.live_server import live_server

pytestmark = pytest.mark.browser

PASSWORD = "a long enough password"
SIZES = ((1400, 900), (390, 844))
SCHEMES: tuple[Literal["dark"], Literal["light"]] = ("dark", "light")


def no_horizontal_overflow(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def sign_in(page: Any, name: str) -> None:
    page.fill('input[name="username"]', name)
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')


def test_sign_in_page_and_role_hints(db_url: str, tmp_path: Path) -> None:
    users_file = tmp_path / "users.txt"
    users.add(users_file, "vic", PASSWORD)
    users.add(users_file, "olga", PASSWORD)
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_AUTH_MODE": "password",
            "DASHBOARD_USERS_FILE": str(users_file),
            "DASHBOARD_ROLES": "olga=operator,*=viewer",
            "DASHBOARD_SECRET_KEY": "k" * 32,
            "DASHBOARD_SAMPLE_INTERVAL_S": "0.5",
        }
    )
    with live_server(create_app(settings)) as base, chromium() as browser:
        for width, height in SIZES:
            for scheme in SCHEMES:
                context = browser.new_context(
                    viewport={"width": width, "height": height}, color_scheme=scheme
                )
                page = context.new_page()
                tag = f"{width}-{scheme}"

                # before sign-in: the product name and the form, nothing else
                page.goto(base + "/locks")
                page.wait_for_url("**/login?next=%2Flocks")
                assert page.locator(".topbar .brand").inner_text() == "pg\u00a0ops"
                assert page.locator("nav").count() == 0
                assert page.locator(".who").count() == 0
                text = page.locator("body").inner_text()
                assert "anonymous" not in text and "viewer" not in text, text
                assert page.locator("form.login-form input[name=username]").is_visible()
                assert no_horizontal_overflow(page), f"login page overflows at {tag}"
                screenshot(page, f"password-login-{tag}")

                # a viewer: back where they were going, with the reason for no buttons
                sign_in(page, "vic")
                page.wait_for_url("**/locks")
                assert page.locator(".who").inner_text() == "vic · viewer"
                assert page.locator("nav a").count() >= 8
                hint = page.locator("#role-hint")
                hint.wait_for(timeout=10_000)
                assert hint.inner_text() == (
                    "Your role: viewer; cancel needs operator, terminate needs admin."
                )
                assert no_horizontal_overflow(page), f"locks overflows at {tag}"
                screenshot(page, f"password-viewer-locks-{tag}")

                page.goto(base + "/migrations")
                hint = page.locator("#role-hint")
                assert hint.inner_text() == (
                    "Your role: viewer; upgrades and downgrades need operator."
                )
                assert page.locator("#migration-actions").count() == 0
                assert no_horizontal_overflow(page), f"migrations overflows at {tag}"
                screenshot(page, f"password-viewer-migrations-{tag}")

                # an error page, in the layout
                page.goto(base + "/runs/424242")
                assert page.locator("#error-page[data-status='404']").is_visible()
                assert page.locator("nav").count() == 1
                assert page.locator("#error-home").get_attribute("href") == "/"
                assert no_horizontal_overflow(page), f"error page overflows at {tag}"
                screenshot(page, f"password-error-404-{tag}")
                context.close()

        # an operator sees the upgrade buttons and only the hint about terminate
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(base + "/migrations")
        sign_in(page, "olga")
        page.wait_for_url("**/migrations")
        assert page.locator("#migration-actions").is_visible()
        assert page.locator("#role-hint").count() == 0
        page.goto(base + "/locks")
        page.locator("#role-hint").wait_for(timeout=10_000)
        assert page.locator("#role-hint").inner_text() == (
            "Your role: operator; terminate needs admin."
        )
        context.close()

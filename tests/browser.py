"""Headless Chromium (Debian's package) driven by Playwright, for end-to-end tests.

Outside CI a missing Chromium skips browser tests with the reason; in CI (CI=true) it is a
failure, because a skipped browser test there would hide a broken page.

Annotate pages with `Page` from here (Playwright's sync `Page`), e.g.
`def watch(page: Page, ...) -> None`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

__all__ = [
    "ARGS",
    "ARTIFACTS",
    "CHROMIUM",
    "Browser",
    "Page",
    "Viewport",
    "browser_page",
    "chromium",
    "chromium_path",
    "screenshot",
]

CHROMIUM: Final[str] = os.environ.get("DASHBOARD_CHROMIUM", "/usr/bin/chromium")
ARGS: Final[list[str]] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
]
ARTIFACTS: Final[Path] = Path(__file__).resolve().parent.parent / "artifacts"

Viewport = tuple[int, int]
"""(width, height) in CSS pixels."""


def chromium_path() -> str:
    """The Chromium executable; skips the test (fails it in CI) when there is none."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        msg = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg + " -- browser tests may not be skipped in CI")
        pytest.skip(msg)
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed afterwards: for tests that need several contexts
    (one per person, say) with their own options."""
    path = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def browser_page(viewport: Viewport = (1400, 900)) -> Iterator[Page]:
    """One page in a fresh browser context of a headless Chromium."""
    with chromium() as browser:
        context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        yield context.new_page()


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as artifacts/<name>.png and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(out), full_page=True)
    return out

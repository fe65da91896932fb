"""The Migrations page's run buttons and the run page's progress bar, in headless Chromium.

The database starts at the demo head 2c3e48f90d09 (applied outside the dashboard), whose
downgrade() raises NotImplementedError; two more revisions are pending, the second of
which fails when it runs. Then:

- "Upgrade to head" is drawn as the primary action, "Downgrade one step" as the dangerous
  one: both differ from a plain button (dark and light);
- "Downgrade one step" (and "Downgrade to") are disabled, with the reason next to them;
- the upgrade fails after one revision: its progress bar is red (class and colour);
- back on the Migrations page, the revision the run applied says when, by whom and which
  run, the head applied before says "applied outside the dashboard", and downgrading is
  offered again (the new current revision can be undone).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from dashboard.app import create_app
from dashboard.settings import Settings
from tests.browser import ARTIFACTS, Page, chromium, screenshot
from tests.live_server import live_server
from tests.migrate import alembic_to
from tests.runs_support import BACKFILL, HEAD, add_revision
from tests.waiting import wait_until

pytestmark = pytest.mark.browser

SCHEMES: tuple[Literal["dark", "light"], ...] = ("dark", "light")
OK_REV = "aa01table001"
BAD_REV = "aa02fails002"
# Fails in the real run only: the review's rehearsal (on a scratch dashboard_rehearsal_*
# database) passes, so the request is accepted and the failure is the run's.
FAILS = (
    "op.execute(\"SELECT CASE WHEN starts_with(current_database(), 'dashboard_rehearsal_') "
    'THEN 1 ELSE 1 / 0 END")'
)


def colours(page: Page, selector: str) -> dict[str, str]:
    found: dict[str, str] = page.eval_on_selector(
        selector,
        """el => { const s = getComputedStyle(el);
                   return {background: s.backgroundColor, color: s.color, border: s.borderTopColor}; }""",
    )
    return found


def css_var(page: Page, name: str) -> str:
    """A colour variable of the page as the browser resolves it (rgb(...))."""
    value: str = page.evaluate(
        """name => { const probe = document.createElement('span');
                     probe.style.color = `var(${name})`; document.body.appendChild(probe);
                     const c = getComputedStyle(probe).color; probe.remove(); return c; }""",
        name,
    )
    return value


def test_run_buttons_blocked_downgrade_failed_run_and_who_applied(
    db_url: str, demo_scripts: Path
) -> None:
    asyncio.run(alembic_to(db_url, demo_scripts, HEAD))
    add_revision(
        demo_scripts,
        OK_REV,
        HEAD,
        "op.create_table('aa_notes', sa.Column('id', sa.Integer, primary_key=True))",
        "op.drop_table('aa_notes')",
    )
    add_revision(demo_scripts, BAD_REV, OK_REV, FAILS, "op.execute('SELECT 1')")
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_REQUIRE_APPROVAL": "false",
            "DASHBOARD_SCRIPT_LOCATION": str(demo_scripts),
        }
    )
    problems: list[str] = []
    with live_server(create_app(settings)) as base, chromium() as browser:
        for scheme in SCHEMES:
            context = browser.new_context(
                viewport={"width": 1400, "height": 900}, color_scheme=scheme
            )
            page = context.new_page()
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(base + "/migrations")
            primary = page.locator("#action-upgrade-head")
            assert "primary" in (primary.get_attribute("class") or "").split()
            plain = colours(page, "#action-upgrade-one")
            head = colours(page, "#action-upgrade-head")
            assert head["background"] != plain["background"], (scheme, head, plain)
            assert head["background"] == css_var(page, "--accent")

            # the head cannot be undone: no downgrade is offered, and the page says why
            down = page.locator("#action-downgrade-one")
            assert down.evaluate("el => el.tagName") == "BUTTON"
            assert "danger" in (down.get_attribute("class") or "").split()
            assert down.is_disabled()
            reason = page.locator("#downgrade-blocked").inner_text()
            assert reason == (
                f"Cannot downgrade: the current revision {HEAD} cannot be downgraded: "
                "its downgrade() raises NotImplementedError."
            )
            assert down.get_attribute("aria-describedby") == "downgrade-blocked"
            assert page.locator("#downgrade-to").is_disabled()
            assert page.locator("#downgrade-to ~ button").is_disabled()
            screenshot(page, f"migrations-actions-blocked-{scheme}")
            context.close()

        with httpx.Client(base_url=base, timeout=60) as client:
            client.get("/runs")
            r = client.post(
                "/api/runs",
                json={"direction": "upgrade", "target": "heads", "expected_current": [HEAD]},
                headers={"x-csrftoken": str(client.cookies.get("csrftoken"))},
            )
            assert r.status_code == 202, r.text
            run_id = int(r.json()["id"])

            def ended() -> dict[str, Any] | None:
                body: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
                return body if body["status"] not in ("queued", "running") else None

            run = wait_until(ended, timeout_s=60, interval_s=0.1, what="the run to end")
            assert run["status"] == "failed", run
            assert run["verified_revs"] == [OK_REV]

        for scheme in SCHEMES:
            context = browser.new_context(
                viewport={"width": 1400, "height": 900}, color_scheme=scheme
            )
            page = context.new_page()
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{base}/runs/{run_id}")
            bar = page.locator("#run-progress")
            classes = (bar.get_attribute("class") or "").split()
            assert "runs-progress-failed" in classes and "runs-progress-running" not in classes
            assert bar.get_attribute("value") == "1" and bar.get_attribute("max") == "2"
            assert colours(page, "#run-progress")["border"] == css_var(page, "--danger")
            assert page.evaluate(
                "getComputedStyle(document.querySelector('#run-progress'))"
                ".getPropertyValue('--runs-bar').trim()"
            ) == page.evaluate(
                "getComputedStyle(document.documentElement).getPropertyValue('--danger').trim()"
            )
            screenshot(page, f"run-progress-failed-page-{scheme}")
            bar.screenshot(path=str(ARTIFACTS / f"run-progress-failed-{scheme}.png"))

            page.goto(base + "/migrations")
            # downgrading is offered again: the current revision's downgrade() drops a table
            down = page.locator("a#action-downgrade-one")
            assert down.count() == 1 and page.locator("#downgrade-blocked").count() == 0
            danger = colours(page, "#action-downgrade-one")
            plain = colours(page, "#action-upgrade-one")
            assert danger["background"] != plain["background"], (scheme, danger, plain)
            assert danger["color"] == css_var(page, "--danger")
            # one step down is reachable; anything below the head would have to undo it
            assert page.locator(f"#downgrade-to option[value='{HEAD}']").is_enabled()
            below = page.locator(f"#downgrade-to option[value='{BACKFILL}']")
            assert below.is_disabled()
            assert f"cannot reach: {HEAD} cannot be downgraded" in below.inner_text()
            assert page.locator("#downgrade-to option[value='base']").is_disabled()
            assert page.locator("#downgrade-to").input_value() == HEAD
            applied = page.locator(f"#applied tr[data-revision='{OK_REV}'] td.migrations-applied")
            assert applied.get_attribute("data-applied-kind") == "run"
            text = " ".join(applied.inner_text().split())
            assert text.startswith("applied 20") and " UTC by local, run " in text, text
            assert text.endswith(f"run {run_id}, which then failed"), text
            link = applied.locator("a")
            assert link.get_attribute("href") == f"/runs/{run_id}"
            outside = page.locator(f"#applied tr[data-revision='{HEAD}'] td.migrations-applied")
            assert outside.inner_text().strip() == "applied outside the dashboard"
            screenshot(page, f"migrations-actions-after-run-{scheme}")
            context.close()
    assert problems == []

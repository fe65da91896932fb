"""End to end in headless Chromium, two people in two browser contexts behind a (trusted)
proxy: carol (operator) requests an upgrade, bob (approver) reviews the exact SQL and
approves it, carol's page notices and she starts it; a second request is rejected with a
reason that contains HTML (shown as text); a third is approved, then its revision file
is edited, and the execute is refused with the change named; the audit page shows it all.
Screenshots (dark scheme: read at 3 am) go to artifacts/."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dashboard.app import create_app
from tests.approval_support import proxy_settings
from tests.browser import ARGS, chromium_path, screenshot
from tests.live_server import live_server
from tests.migrate import alembic_to
from tests.runs_support import BACKFILL, HEAD, add_revision

pytestmark = pytest.mark.browser

EXTRA = "zz02browser1"


@contextmanager
def people(*names: str, dark: bool = True) -> Iterator[list[Any]]:
    """One page per person, each in its own browser context sending X-Forwarded-User."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=ARGS, headless=True)
        try:
            pages = []
            for name in names:
                context = browser.new_context(
                    viewport={"width": 1400, "height": 900},
                    color_scheme="dark" if dark else "light",
                    extra_http_headers={"X-Forwarded-User": name},
                )
                pages.append(context.new_page())
            yield pages
        finally:
            browser.close()


def watch(page: Any, problems: list[str], expected: set[str]) -> None:
    def on_response(r: Any) -> None:
        if r.status >= 400 and not r.url.endswith("/favicon.ico"):
            key = f"{r.status} {r.url.split('/', 3)[-1]}"
            if key not in expected:
                problems.append(key)

    page.on("response", on_response)
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and "status of 404" not in m.text and "409" not in m.text
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: problems.append(f"dialog opened: {d.message}"))


def test_two_people_request_approve_execute_reject_void(db_url: str, demo_scripts: Path) -> None:
    add_revision(demo_scripts, EXTRA, HEAD, "op.execute('SELECT 1')")
    asyncio.run(alembic_to(db_url, demo_scripts, BACKFILL))
    settings = proxy_settings(db_url, demo_scripts)
    problems: list[str] = []
    with live_server(create_app(settings)) as base, people("carol", "bob") as (carol, bob):
        watch(carol, problems, {"409 runs/3/execute"})
        watch(bob, problems, set())

        # carol asks for the next step (irreversible: it drops a column)
        carol.goto(base + "/migrations")
        carol.locator("#action-upgrade-one").click()
        carol.wait_for_url("**/runs/new**")
        assert "(needs approval)" in carol.locator("button[data-confirm-input]").inner_text()
        carol.locator("#confirm-target").fill(HEAD)
        carol.locator("button[data-confirm-input='confirm-target']").click()
        carol.wait_for_url("**/runs/1")
        assert "Needs a second person" in carol.locator("#approval-headline").inner_text()
        assert carol.locator("#approve-button").count() == 0
        assert carol.locator("#execute-button").count() == 0
        assert "different person" in carol.locator(".approval-why").inner_text()
        screenshot(carol, "approval-requested")

        # bob reviews the exact SQL and approves it
        bob.goto(base + "/runs/1")
        sql = bob.locator("#run-sql").inner_text()
        assert "DROP COLUMN legacy_phone" in sql
        assert HEAD in bob.locator("#run-irreversible").inner_text()
        sha = bob.locator("#run-sql-sha256").inner_text().strip()
        assert sha[:12] in bob.locator("#approve-button").inner_text()
        assert bob.locator("#execute-button").count() == 0
        screenshot(bob, "approval-review")
        bob.locator("#approve-comment").fill("checked: legacy_phone is unused since March")
        bob.locator("#approve-button").click()
        bob.wait_for_url("**/runs/1")
        assert "Approved by bob" in bob.locator("#approval-headline").inner_text()

        # carol's open page notices by itself (polling), and she starts it
        carol.locator("#execute-button").wait_for(timeout=15000)
        assert "approved, not started" in carol.locator("#run-panel").inner_text()
        screenshot(carol, "approval-ready")
        carol.locator("#execute-button").click()
        carol.locator("#run-panel[data-status='succeeded']").wait_for(timeout=20000)
        assert HEAD in carol.locator("#run-verified").inner_text()
        assert "bob" in carol.locator("#run-approved-by").inner_text()
        screenshot(carol, "approval-executed")

        # a second request, rejected with a reason that contains markup
        carol.goto(base + "/runs/new?direction=upgrade&target=%2B1")
        carol.locator("#confirm-target").fill(EXTRA)
        carol.locator("button[data-confirm-input='confirm-target']").click()
        carol.wait_for_url("**/runs/2")
        bob.goto(base + "/runs/2")
        reason = '<script>alert("x")</script> not during the peak; <b>tomorrow</b> 06:00'
        bob.locator("#reject-reason").fill(reason)
        bob.locator("#reject-button").click()
        bob.wait_for_url("**/runs/2")
        assert bob.locator("#approval-reason").inner_text() == reason
        assert bob.locator("#approval-reason b").count() == 0
        assert bob.locator("#run-panel[data-status='rejected']").count() == 1
        screenshot(bob, "approval-rejected")

        # a third: approved, then the revision file changes before it is started
        carol.goto(base + "/runs/new?direction=upgrade&target=%2B1")
        carol.locator("#confirm-target").fill(EXTRA)
        carol.locator("button[data-confirm-input='confirm-target']").click()
        carol.wait_for_url("**/runs/3")
        bob.goto(base + "/runs/3")
        bob.locator("#approve-button").click()
        bob.wait_for_url("**/runs/3")
        rev = demo_scripts / "versions" / f"{EXTRA}_test.py"
        rev.write_text(rev.read_text().replace("SELECT 1", "SELECT 1; DROP TABLE orders"))
        carol.goto(base + "/runs/3")
        carol.locator("#execute-button").click()
        carol.locator("#action-error").wait_for()
        assert "approval void" in carol.locator("#action-error").inner_text()
        changed = carol.locator("#approval-void li").evaluate_all(
            "els => els.map(e => e.dataset.changed)"
        )
        assert changed == ["file", "sql"]
        assert carol.locator("#execute-button").count() == 0
        screenshot(carol, "approval-void")

        # the audit page, filtered to runs, and its CSV export
        bob.goto(base + "/audit")
        bob.locator("input[name='action']").fill("run.*")
        bob.locator("#audit-filters button[type='submit']").click()
        bob.wait_for_url("**/audit?**")
        actions = bob.locator("tr[data-audit-id]").evaluate_all(
            "rows => rows.map(r => r.dataset.action + ':' + r.dataset.outcome)"
        )
        assert actions[-1] == "run.request:created" and "run.approve:approved" in actions
        assert "run.reject:rejected" in actions and "run.execute:refused" in actions
        assert "<script>" not in bob.content().split("<main>", 1)[1].split("</main>")[0]
        screenshot(bob, "audit")
        export = bob.request.get(base + "/audit.csv?action=run.%2A")
        assert export.ok
        rows = list(csv.DictReader(io.StringIO(export.text())))
        assert [r["action"] + ":" + r["outcome"] for r in rows] == actions
    assert problems == []

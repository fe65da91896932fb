"""The migration review in headless Chromium, two people behind a (trusted) proxy.

carol (operator) opens the confirmation page of an upgrade whose plan has a data-dependent
revision (the demo's batched backfill), a dropped column, a CREATE INDEX without
CONCURRENTLY on an existing table and an ALTER COLUMN TYPE. The review comes first: the
plan's risk, each statement's lock mode, the rules it breaks; when a test session holds a
conflicting lock on the table, the conflict appears with the next refresh, and the
acknowledgement she ticked meanwhile is still ticked (the refresh swaps only the live
parts). bob (approver) then finds the review on the run page; approving without
acknowledging the data-dependent revision is refused, with the checkbox and a reason it
is approved. From an early revision, the confirmation page says before anything else which
steps run outside a transaction (the demo's enum ADD VALUE and CREATE INDEX CONCURRENTLY)
and what a failure half-way would leave.

Waits are on conditions (selectors, attributes), never on time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from dashboard.app import create_app
from tests.approval_support import proxy_settings
from tests.browser import ARGS, chromium_path, screenshot
from tests.live_server import live_server
from tests.migrate import alembic_to
from tests.runs_support import BACKFILL, BASE, CIC_REV, DEMO, ENUM_REV, HEAD, add_revision

pytestmark = pytest.mark.browser

RISKY = "zz05review01"
CREATE_INDEX = "CREATE INDEX ix_orders_total ON orders (total_cents)"
ALTER_TYPE = "ALTER TABLE orders ALTER COLUMN total_cents TYPE BIGINT"
DATA_ACK = f"data-dependent|{BACKFILL}|"
REVIEW_TIMEOUT_MS = 90_000  # the first view rehearses the plan on a scratch database
LIVE_TIMEOUT_MS = 45_000  # a sample (2 s) plus a refresh of the panel (5 s), with room


def prepare(db_url: str, plain_db_url: str, scripts: Path) -> None:
    """The demo schema at the revision before the backfill, with rows; one more revision
    on top that builds an index without CONCURRENTLY and changes a column's type."""
    add_revision(
        scripts,
        RISKY,
        HEAD,
        f"""
        op.execute("{CREATE_INDEX}")
        op.execute("{ALTER_TYPE}")
        """,
    )
    asyncio.run(alembic_to(db_url, scripts, CIC_REV))

    async def fill() -> None:
        conn = await asyncpg.connect(plain_db_url)
        try:
            await conn.execute(
                "INSERT INTO customers (email, name) "
                "SELECT 'c' || g || '@example.com', 'n' || g FROM generate_series(1, 500) g"
            )
            await conn.execute(
                "INSERT INTO orders (customer_id, total_cents) "
                "SELECT c.id, g FROM generate_series(1, 4) g CROSS JOIN customers c"
            )
            await conn.execute("ANALYZE customers; ANALYZE orders")
        finally:
            await conn.close()

    asyncio.run(fill())


@contextmanager
def people(*names: str, width: int = 1400, dark: bool = True) -> Iterator[list[Any]]:
    """One page per person, each in its own browser context sending X-Forwarded-User."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
        try:
            pages = []
            for name in names:
                context = browser.new_context(
                    viewport={"width": width, "height": 900},
                    color_scheme="dark" if dark else "light",
                    extra_http_headers={"X-Forwarded-User": name},
                )
                pages.append(context.new_page())
            yield pages
        finally:
            browser.close()


def watch(page: Any, problems: list[str], expected: frozenset[str] = frozenset()) -> None:
    """Collect failed responses, console errors and page errors (asserted empty)."""

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
            if m.type == "error" and not any(f"status of {c}" in m.text for c in (404, 409))
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))


def before(page: Any, first: str, second: str) -> bool:
    """`first` comes before `second` in document order."""
    return bool(
        page.evaluate(
            "([a, b]) => !!(document.querySelector(a).compareDocumentPosition("
            "document.querySelector(b)) & Node.DOCUMENT_POSITION_FOLLOWING)",
            [first, second],
        )
    )


def statement_index(review: dict[str, Any], sql: str) -> int:
    (index,) = [s["index"] for s in review["statements"] if s["sql"].strip() == sql]
    return int(index)


def test_confirm_page_leads_with_the_review_and_shows_a_live_conflict(
    db_url: str, plain_db_url: str, demo_scripts: Path
) -> None:
    prepare(db_url, plain_db_url, demo_scripts)
    problems: list[str] = []
    holder: psycopg.Connection[Any] | None = None
    with (
        live_server(create_app(proxy_settings(db_url, demo_scripts))) as base,
        people("carol") as (carol,),
    ):
        watch(carol, problems)
        try:
            carol.goto(base + "/runs/new?direction=upgrade&target=heads")
            # the placeholder is there at once, the panel replaces it when the review is made
            panel = carol.wait_for_selector("#review[data-risk]", timeout=REVIEW_TIMEOUT_MS)
            assert panel is not None
            assert before(carol, "#review", "#plan-sql")
            assert before(carol, "#review", ".runs-plan")

            review = carol.request.get(
                base + "/api/review?direction=upgrade&target=heads",
                headers={"X-Forwarded-User": "carol"},
            ).json()
            assert review["risk"] == "high"
            assert carol.locator("#review").get_attribute("data-risk") == "high"
            assert carol.locator("#review-risk").inner_text().strip().lower().endswith("high")
            exact = carol.locator("#review").get_attribute("data-exact") == "true"
            assert exact == review["exact"]
            if exact:
                assert "exact statements" in carol.locator("#review-exact").inner_text()
            else:
                assert "Not rehearsed" in carol.locator("#review-not-rehearsed").inner_text()

            # one row per statement, each showing its relations' lock modes
            rows = carol.locator("tbody.review-stmt")
            assert rows.count() == len(review["statements"])
            for s in review["statements"]:
                row = carol.locator(f"#review-stmt-{s['index']}")
                shown = row.locator(".review-lock").evaluate_all(
                    "els => els.map(e => [e.dataset.relation, e.dataset.mode])"
                )
                assert shown == [[lock["relation"], lock["mode"]] for lock in s["locks"]]
                assert row.get_attribute("data-risk") == s["risk"]
                rules = row.locator(".review-finding").evaluate_all(
                    "els => els.map(e => e.dataset.rule)"
                )
                assert rules == [f["rule"] for f in s["findings"]]

            index_at = statement_index(review, CREATE_INDEX)
            alter_at = statement_index(review, ALTER_TYPE)
            index_row = carol.locator(f"#review-stmt-{index_at}")
            alter_row = carol.locator(f"#review-stmt-{alter_at}")
            assert "ShareLock" in index_row.locator(".review-locks").inner_text()
            assert alter_row.locator(".review-lock-ael[data-mode='AccessExclusiveLock']").count()
            assert index_row.locator(
                ".review-finding[data-rule='require-concurrent-index-creation']"
            ).is_visible()
            assert alter_row.locator(".review-finding[data-rule='changing-column-type']").count()
            assert alter_row.locator("[data-flag='rewrite']").count() == 1
            # the data-dependent revision is called out, with its reason
            assert BACKFILL in carol.locator("#review-data-dependent").inner_text()
            # nobody in the way yet
            conflicts = carol.locator(f"#review-conflicts-{alter_at}")
            assert conflicts.get_attribute("data-count") == "0"
            assert "no session in the way" in conflicts.inner_text()
            screenshot(carol, "review-confirm")

            # carol starts acknowledging; a refresh must not clear what she did
            acks = carol.locator("#review-acks")
            assert acks.is_visible()
            assert acks.locator(f".review-ack-required input[value='{DATA_ACK}']").count() == 1
            carol.locator(f"#review-acks input[value='{DATA_ACK}']").check()
            carol.locator("#review-ack-reason").fill("backfill reads 500 customers; fine")
            carol.locator("#review-sql-" + str(alter_at) + " summary").click()

            # a session reads orders in an open transaction: AccessShareLock, which the
            # ALTER TABLE (AccessExclusiveLock) would wait for
            holder = psycopg.connect(plain_db_url, application_name="review-test-reader")
            holder.execute("SELECT count(*) FROM orders").fetchone()
            pid = holder.info.backend_pid
            conflict = carol.wait_for_selector(
                f"#review-conflicts-{alter_at} .review-conflict[data-pid='{pid}']",
                timeout=LIVE_TIMEOUT_MS,
            )
            assert conflict is not None
            assert conflict.get_attribute("data-mode") == "AccessShareLock"
            assert conflict.get_attribute("data-granted") == "true"
            text = conflict.inner_text()
            assert f"pid {pid}" in text and "holds" in text and "idle in transaction" in text
            assert "SELECT count(*) FROM orders" in text
            # a CREATE INDEX (ShareLock) does not conflict with a reader
            assert carol.locator(f"#review-conflicts-{index_at} .review-conflict").count() == 0
            assert int(carol.locator("#review-live").get_attribute("data-conflicts") or 0) >= 1
            # what carol did survived the refresh that brought the conflict
            assert carol.locator(f"#review-acks input[value='{DATA_ACK}']").is_checked()
            assert (
                carol.locator("#review-ack-reason").input_value()
                == "backfill reads 500 customers; fine"
            )
            assert carol.locator(f"#review-sql-{alter_at}").get_attribute("open") is not None
            screenshot(carol, "review-confirm-conflict")

            # the session ends; the conflict goes with the next refresh
            holder.close()
            holder = None
            carol.wait_for_selector(
                f"#review-conflicts-{alter_at}[data-count='0']", timeout=LIVE_TIMEOUT_MS
            )

            # the acknowledgement goes with the request (form= attribute on the inputs)
            carol.locator("#confirm-target").fill(RISKY)
            carol.locator("button[data-confirm-input='confirm-target']").click()
            carol.wait_for_url("**/runs/1")
            run = carol.request.get(
                base + "/api/runs/1", headers={"X-Forwarded-User": "carol"}
            ).json()
            given = (run.get("statement_pins") or {}).get("acknowledgements") or []
            assert [(a["rule"], a["revision"]) for a in given] == [("data-dependent", BACKFILL)]
            assert given[0]["reason"] == "backfill reads 500 customers; fine"
        finally:
            if holder is not None:
                holder.close()
    assert problems == []


def test_approval_page_shows_the_review_and_needs_the_data_acknowledgement(
    db_url: str, plain_db_url: str, demo_scripts: Path
) -> None:
    prepare(db_url, plain_db_url, demo_scripts)
    problems: list[str] = []
    with (
        live_server(create_app(proxy_settings(db_url, demo_scripts))) as base,
        people("carol", "bob") as (carol, bob),
    ):
        watch(carol, problems)
        watch(bob, problems, frozenset({"409 runs/1/approve"}))

        # carol requests the upgrade without acknowledging anything (approval is required)
        carol.goto(base + "/runs/new?direction=upgrade&target=heads")
        carol.wait_for_selector("#review[data-risk]", timeout=REVIEW_TIMEOUT_MS)
        carol.locator("#confirm-target").fill(RISKY)
        carol.locator("button[data-confirm-input='confirm-target']").click()
        carol.wait_for_url("**/runs/1")
        carol.wait_for_selector("#review[data-risk]", timeout=REVIEW_TIMEOUT_MS)
        # she cannot approve her own run: no approve form, so no acknowledgement inputs
        assert carol.locator("#approve-form").count() == 0
        assert not carol.locator("#review-acks").is_visible()

        # bob reviews: the review comes before the exact SQL
        bob.goto(base + "/runs/1")
        bob.wait_for_selector("#review[data-risk='high']", timeout=REVIEW_TIMEOUT_MS)
        assert before(bob, "#review", "#run-sql")
        assert bob.locator(".review-finding[data-rule='changing-column-type']").count() == 1
        assert bob.locator(".review-lock[data-mode='AccessExclusiveLock']").count() >= 1
        required = bob.locator(f".review-ack-required input[value='{DATA_ACK}']")
        assert required.is_visible()
        assert required.get_attribute("form") == "approve-form"
        assert bob.locator("#review-ack-reason").get_attribute("form") == "approve-form"
        assert bob.locator("#approve-form .review-ack-hint").is_visible()
        screenshot(bob, "review-approval")

        # approving without the acknowledgement is refused, with the reason why
        bob.locator("#approve-button").click()
        error = bob.wait_for_selector("#action-error[data-code='acknowledgement_required']")
        assert error is not None
        assert BACKFILL in error.inner_text() and "depend on data" in error.inner_text()
        assert bob.locator("#run-panel").get_attribute("data-approval") == "pending"

        # with the checkbox and a reason it is approved
        bob.wait_for_selector("#review[data-risk]", timeout=REVIEW_TIMEOUT_MS)
        bob.locator(f"#review-acks input[value='{DATA_ACK}']").check()
        bob.locator("#review-ack-reason").fill("batched backfill, 500 rows, checked the loop")
        bob.locator("#approve-button").click()
        bob.wait_for_url("**/runs/1")
        headline = bob.wait_for_selector("#approval-headline:has-text('Approved by bob')")
        assert headline is not None
        run = bob.request.get(base + "/api/runs/1", headers={"X-Forwarded-User": "bob"}).json()
        acks = run["approval"]["acknowledgements"]
        assert [(a["rule"], a["revision"], a["by"]) for a in acks] == [
            ("data-dependent", BACKFILL, "bob")
        ]
        assert "checked the loop" in json.dumps(acks)
    assert problems == []


def test_confirm_page_says_which_steps_run_outside_a_transaction(db_url: str) -> None:
    asyncio.run(alembic_to(db_url, DEMO, BASE))
    problems: list[str] = []
    with (
        live_server(create_app(proxy_settings(db_url))) as base,
        people("carol", width=900) as (carol,),
    ):
        watch(carol, problems)
        carol.goto(base + "/runs/new?direction=upgrade&target=heads")
        carol.wait_for_selector("#review[data-risk]", timeout=REVIEW_TIMEOUT_MS)
        review = carol.request.get(
            base + "/api/review?direction=upgrade&target=heads",
            headers={"X-Forwarded-User": "carol"},
        ).json()
        box = carol.locator("#review-non-transactional")
        assert box.is_visible()
        assert before(carol, "#review-non-transactional", "#review-statements")
        assert "Steps that run outside a transaction" in box.inner_text()
        shown = box.locator(".review-nt-revision").evaluate_all(
            "els => els.map(e => e.dataset.revision)"
        )
        assert shown == [n["revision"] for n in review["non_transactional"]]
        assert shown == [ENUM_REV, CIC_REV]
        for n in review["non_transactional"]:
            block = box.locator(f".review-nt-revision[data-revision='{n['revision']}']")
            indexes = block.locator(".review-nt-statements li").evaluate_all(
                "els => els.map(e => Number(e.dataset.index))"
            )
            assert indexes == [x["index"] for x in n["statements"]]
            leaves = block.locator(".review-nt-leave").all_inner_texts()
            assert [t.strip() for t in leaves] == n["leaves"]
            assert block.locator(".review-nt-note").inner_text().strip() == n["note"]
        cic = box.locator(f".review-nt-revision[data-revision='{CIC_REV}']").inner_text()
        assert "INVALID index ix_orders_customer_created" in cic
        enum = box.locator(f".review-nt-revision[data-revision='{ENUM_REV}']").inner_text()
        assert "'refunded' stays in order_status" in enum
        # each statement links to its row in the table, which marks it outside a transaction
        first = review["non_transactional"][1]["statements"][0]["index"]
        row = carol.locator(f"#review-stmt-{first}")
        assert row.locator("[data-flag='outside-transaction']").count() == 1
        box.locator(f"a[href='#review-stmt-{first}']").click()
        carol.wait_for_url(f"**#review-stmt-{first}")
        screenshot(carol, "review-non-transactional")
    assert problems == []

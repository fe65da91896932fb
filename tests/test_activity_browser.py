"""In headless Chromium at 1400 and 390 px, dark and light, during a real lock pile-up:

- Activity lists every session; lock waiters read "waiting"; sorting (column headers, or
  the sort controls on a phone) and filtering (state, free text) happen on the server and
  survive the panel's refreshes; an expanded query stays expanded; the document is never
  wider than the window;
- the kill confirmation (Locks page, and from the Activity list) opens fully visible below
  the sticky top bar with focus inside it; Escape gives focus back to the button that
  opened it; a cancel from the list works;
- "All sessions" on the Locks page leads to the list.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from dashboard.app import create_app
from dashboard.settings import Settings
from tests.browser import Page, browser_page, screenshot
from tests.live_server import live_server
from tests.lock_chain import Pile
from tests.waiting import wait_until

pytestmark = pytest.mark.browser
T = TypeVar("T")

VIEWPORTS = {1400: (1400, 900), 390: (390, 844)}
LONG_SQL = (
    "SELECT pg_sleep(120) /* nightly report: "
    + " ".join(f"customer_{i}" for i in range(40))
    + " */"
)


class LoopThread:
    """An event loop in a thread: the pile-up's sessions live there while the
    (synchronous) browser drives the pages."""

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
    """A holder idle in transaction, a migration and two readers queued behind it, and a
    long report query that runs (not waiting)."""
    await pile.sql(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance int);"
        "INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 10) g"
    )
    holder = await pile.session("billing-api")
    await holder.execute("BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1")
    migration = await pile.session("alembic")
    await pile.block(migration, "ALTER TABLE accounts ADD COLUMN note text")
    pids = {"holder": holder.get_server_pid(), "migration": migration.get_server_pid()}
    for i in range(2):
        reader = await pile.session(f"web-{i}")
        await pile.block(reader, f"SELECT balance FROM accounts WHERE id = {i + 2}")
        pids[f"web-{i}"] = reader.get_server_pid()
    report = await pile.session("nightly-report")
    pile.start(report, LONG_SQL)
    pids["report"] = report.get_server_pid()
    return pids


@contextmanager
def scene(db_url: str, plain_db_url: str) -> Iterator[tuple[str, dict[str, int], LoopThread, Pile]]:
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_SAMPLE_INTERVAL_S": "1",
        }
    )
    lt = LoopThread()
    pile = Pile(plain_db_url)
    lt.run(pile.__aenter__())
    try:
        pids = lt.run(pile_up(pile))
        with live_server(create_app(settings)) as base:
            yield base, pids, lt, pile
    finally:
        lt.run(pile.__aexit__(None, None, None))
        lt.close()


def wait_js(page: Page, fn: str, arg: Any = None, timeout_s: float = 10.0, what: str = "") -> Any:
    """Until the function `fn` (JavaScript source) returns something truthy in the page.
    (Playwright's wait_for_function evaluates strings, which the page's CSP forbids.)"""
    return wait_until(lambda: page.evaluate(fn, arg), timeout_s=timeout_s, what=what or fn)


def fits(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def rows(page: Page) -> list[tuple[int, str]]:
    """(pid, state) of every row of the list, in order."""
    got = page.eval_on_selector_all(
        "#session-table tbody tr",
        "trs => trs.map(t => [Number(t.dataset.pid), t.dataset.state])",
    )
    return [(int(p), str(s)) for p, s in got]


def mark_panel(page: Page) -> None:
    page.evaluate("document.getElementById('sessions').dataset.old = '1'")


def wait_for_refresh(page: Page) -> None:
    """Until the polled panel has been swapped (the marked #sessions is gone)."""
    wait_js(page, "() => !document.getElementById('sessions').dataset.old")


def wait_list(page: Page, **attrs: str) -> None:
    """Until #sessions carries these data-* values (the server applied the query)."""
    sel = "#sessions" + "".join(f'[data-{k.replace("_", "-")}="{v}"]' for k, v in attrs.items())
    page.wait_for_selector(sel, timeout=10_000)


def visible_below_bar(page: Page, selector: str) -> dict[str, Any]:
    box: dict[str, Any] = page.evaluate(
        """sel => {
          const el = document.querySelector(sel);
          const bar = document.querySelector('.topbar').getBoundingClientRect();
          const r = el.getBoundingClientRect();
          return {top: r.top, bottom: r.bottom, bar: bar.bottom, height: window.innerHeight,
                  ok: r.top >= bar.bottom - 0.5 && r.bottom <= window.innerHeight + 0.5};
        }""",
        selector,
    )
    return box


def closest_cards(page: Page) -> dict[str, Any]:
    """The two cards of the page that come closest to each other, and the gap
    between them in px (negative: they overlap)."""
    worst: dict[str, Any] = page.evaluate(
        """() => {
          const cards = [...document.querySelectorAll('main .card')]
            .filter(c => !c.parentElement.closest('.card'));
          let worst = {gap: Infinity, a: null, b: null};
          for (let i = 0; i < cards.length; i++) for (let j = i + 1; j < cards.length; j++) {
            const a = cards[i].getBoundingClientRect(), b = cards[j].getBoundingClientRect();
            const gap = Math.max(b.left - a.right, a.left - b.right, b.top - a.bottom, a.top - b.bottom);
            if (gap < worst.gap) worst = {gap, a: cards[i].id, b: cards[j].id};
          }
          return worst;
        }"""
    )
    return worst


def focus_inside(page: Page, selector: str) -> None:
    wait_js(
        page,
        "sel => { const el = document.querySelector(sel);"
        " return !!el && el.contains(document.activeElement) && el !== document.activeElement; }",
        selector,
        what=f"focus inside {selector}",
    )


def shoot(page: Page, name: str) -> None:
    for scheme in ("dark", "light"):
        page.emulate_media(color_scheme=scheme)
        screenshot(page, f"{name}-{scheme}")
    page.emulate_media(color_scheme="dark")


@pytest.mark.parametrize("width", [1400, 390])
def test_activity_session_list_sorts_filters_and_fits(
    width: int, db_url: str, plain_db_url: str
) -> None:
    with (
        scene(db_url, plain_db_url) as (base, pids, _lt, _pile),
        browser_page(VIEWPORTS[width]) as page,
    ):
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        ours = set(pids.values())
        page.goto(base + "/activity#sessions")
        page.wait_for_selector(f'#session-table tr[data-pid="{pids["migration"]}"]')
        listed = dict(rows(page))
        assert listed[pids["holder"]] == "idle in transaction"
        for name in ("migration", "web-0", "web-1"):
            assert listed[pids[name]] == "waiting", name
        assert listed[pids["report"]] == "active"
        budget = page.locator("#budget")
        assert budget.locator('[data-state="waiting"]').count() == 1
        assert budget.locator('[data-state="free"]').count() == 1
        # free and idle do not share a colour in the legend
        colours = page.evaluate(
            """() => {
              const c = s => getComputedStyle(document.querySelector(
                `#budget .locks-legend[data-state="${s}"]`), '::before');
              const idle = document.querySelector('#budget .locks-legend[data-state="idle"]');
              return {free: [c('free').color, c('free').content],
                      idle: idle ? [c('idle').color, c('idle').content] : null};
            }"""
        )
        assert colours["idle"] is None or colours["idle"] != colours["free"], colours
        assert visible_below_bar(page, "#sessions")["top"] >= 0
        gap = closest_cards(page)
        assert gap["gap"] >= 8, f"cards touch: {gap}"
        assert fits(page), "the document is wider than the window"
        shoot(page, f"activity-sessions-{width}")

        # --- sort ---------------------------------------------------------------------
        if width == 1400:
            header = page.locator('#session-table th a[data-sort="application"]')
            header.click()
            wait_list(page, sort="application", dir="asc")
            wait_js(page, "() => location.search.includes('sort=application')")
            apps = [
                page.locator(f'#session-table tr[data-pid="{p}"] td[data-label="application"]')
                .inner_text()
                .strip()
                for p, _ in rows(page)
                if p in ours
            ]
            assert apps == sorted(apps, key=str.casefold), apps
            page.locator('#session-table th a[data-sort="application"]').click()
            wait_list(page, sort="application", dir="desc")
            th = page.locator('#session-table th[aria-sort="descending"]')
            assert th.locator("a").get_attribute("data-sort") == "application"
        else:
            assert page.locator("#session-table thead").is_hidden()  # rows reflow
            page.select_option("#sessions-sort", "pid")
            page.select_option("#sessions-dir", "desc")
            wait_list(page, sort="pid", dir="desc")
        order = [p for p, _ in rows(page)]
        if width == 390:
            assert order == sorted(order, reverse=True)
        # the order survives the panel's refreshes (the form is sent with each poll)
        mark_panel(page)
        wait_for_refresh(page)
        assert page.locator("#sessions").get_attribute("data-sort") == (
            "application" if width == 1400 else "pid"
        )

        # --- filter -------------------------------------------------------------------
        page.select_option("#sessions-state", "waiting")
        wait_list(page, state_filter="waiting")
        assert {s for _, s in rows(page)} == {"waiting"}
        assert {pids["migration"], pids["web-0"], pids["web-1"]} <= {p for p, _ in rows(page)}
        page.fill("#sessions-q", "web-")
        wait_list(page, state_filter="waiting", q="web-")
        assert sorted(p for p, _ in rows(page)) == sorted([pids["web-0"], pids["web-1"]])
        wait_js(
            page,
            "() => location.search.includes('state=waiting') && location.search.includes('q=web-')",
            what="the filter in the address bar",
        )
        page.focus("#sessions-q")
        mark_panel(page)
        wait_for_refresh(page)
        assert page.evaluate("document.activeElement.id") == "sessions-q"  # typing goes on
        assert page.input_value("#sessions-q") == "web-"
        assert sorted(p for p, _ in rows(page)) == sorted([pids["web-0"], pids["web-1"]])
        assert fits(page)
        shoot(page, f"activity-sessions-filtered-{width}")

        if width == 1400:  # Back: the previous filter, in the list and in the form
            page.go_back()
            wait_list(page, state_filter="waiting", q="")
            assert page.input_value("#sessions-q") == ""
            assert page.input_value("#sessions-state") == "waiting"
            assert page.locator("h1").count() == 1  # the whole page, once
            assert len(rows(page)) > 2
            page.go_forward()
            wait_list(page, state_filter="waiting", q="web-")
            assert page.input_value("#sessions-q") == "web-"

        page.fill("#sessions-q", "no such session anywhere")
        wait_list(page, q="no such session anywhere")
        assert page.locator("#sessions-empty").is_visible()

        # --- a long query expands, and stays expanded across refreshes ---------------
        page.goto(base + "/activity?q=nightly-report&state=active#sessions")
        row = page.locator(f'#session-table tr[data-pid="{pids["report"]}"]')
        row.wait_for()
        details = row.locator("details.act-query")
        assert "customer_39" not in details.locator("summary").inner_text()
        details.locator("summary").click()
        assert details.locator(".act-query-full").is_visible()
        assert "customer_39" in details.locator(".act-query-full").inner_text()
        mark_panel(page)
        wait_for_refresh(page)
        assert (
            page.locator(
                f'#session-table tr[data-pid="{pids["report"]}"] details.act-query[open]'
            ).count()
            == 1
        )
        assert fits(page)
        shoot(page, f"activity-query-open-{width}")

        assert not errors, errors

        # --- a bad parameter says so on the page (a 400 with the page) -----------------
        response = page.goto(base + "/activity?sort=password#sessions")
        assert response is not None and response.status == 400
        assert "sort" in page.locator("#sessions-error").inner_text()
        assert fits(page)


@pytest.mark.parametrize("width", [1400, 390])
def test_kill_confirmation_in_view_with_focus(width: int, db_url: str, plain_db_url: str) -> None:
    with (
        scene(db_url, plain_db_url) as (base, pids, lt, pile),
        browser_page(VIEWPORTS[width]) as page,
    ):
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        holder = pids["holder"]
        page.goto(base + "/locks")
        page.wait_for_selector(f"#root-{holder}")

        # Locks: terminate the root -> the typed confirmation, in view, focused
        opener = page.locator(f"#root-{holder} button", has_text="Terminate…")
        opener.scroll_into_view_if_needed()
        page.mouse.wheel(0, 400)  # as a reader would be: further down the page
        opener.click()
        page.locator("#backend-confirm").wait_for()
        focus_inside(page, "#backend-confirm")
        assert page.evaluate("document.activeElement.name") == "confirm"
        box = visible_below_bar(page, "#backend-confirm")
        assert box["ok"], box
        assert fits(page)
        shoot(page, f"locks-confirm-focus-{width}")
        # Escape closes it; focus goes back to the button that opened it
        page.keyboard.press("Escape")
        page.locator("#backend-confirm").wait_for(state="detached")
        wait_js(
            page,
            "pid => { const a = document.activeElement;"
            " return !!a && (a.getAttribute('hx-get') || '').includes('/backends/' + pid +"
            " '/confirm?action=terminate'); }",
            holder,
            what="focus back on the Terminate… button",
        )

        # Locks: cancel a waiter from the tree -> focus on the confirmation's first button
        waiter_row = page.locator(f'tr.locks-row[data-pid="{pids["migration"]}"]')
        waiter_row.locator("button", has_text="Cancel…").click()
        page.locator("#backend-confirm").wait_for()
        focus_inside(page, "#backend-confirm")
        assert page.evaluate("document.activeElement.tagName") == "BUTTON"
        assert visible_below_bar(page, "#backend-confirm")["ok"]
        page.locator("#backend-confirm button", has_text="Close").click()
        page.locator("#backend-confirm").wait_for(state="detached")
        wait_js(
            page,
            "pid => ((document.activeElement || {}).getAttribute?.('hx-get') || '')"
            ".includes('/backends/' + pid + '/confirm?action=cancel')",
            pids["migration"],
            what="focus back on the Cancel… button after Close",
        )

        # "All sessions" leads to the list, below the sticky bar
        page.locator("a.locks-all-sessions").first.click()
        page.wait_for_url("**/activity#sessions")
        page.wait_for_selector(f'#session-table tr[data-pid="{holder}"]')
        assert (
            visible_below_bar(page, "#sessions h2")["top"]
            >= visible_below_bar(page, "#sessions h2")["bar"] - 0.5
        )

        # Activity: cancel a waiter from the list, with the same confirmation
        web0 = pids["web-0"]
        row = page.locator(f'#session-table tr[data-pid="{web0}"]')
        row.scroll_into_view_if_needed()
        row.locator("button", has_text="Cancel…").click()
        page.locator(f'#backend-confirm[data-pid="{web0}"]').wait_for()
        focus_inside(page, "#backend-confirm")
        box = visible_below_bar(page, "#backend-confirm")
        assert box["ok"], box
        shoot(page, f"activity-confirm-cancel-{width}")
        page.keyboard.press("Enter")  # focus is on "Cancel query of pid ..."
        result = page.locator(".locks-result")
        result.wait_for()
        assert result.get_attribute("data-outcome") == "cancel_sent", result.inner_text()
        focus_inside(page, "#backend-action")  # the outcome's Dismiss button
        assert lt.run(pile.alive(web0))
        wait_js(
            page,
            'pid => { const r = document.querySelector(`#session-table tr[data-pid="${pid}"]`);'
            " return !!r && r.dataset.state !== 'waiting'; }",
            web0,
            what="the cancelled reader no longer waiting",
        )
        page.keyboard.press("Escape")
        page.locator(".locks-result").wait_for(state="detached")
        assert fits(page)
        assert not errors, errors

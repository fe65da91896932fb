"""Errors asked for by a person's browser are pages in the layout; API clients keep JSON.

A browser (`Accept: text/html…`, not htmx, not an `/api/` path) gets the status, a plain
sentence, the request id and a link home inside the usual page (stylesheet, navigation for
a signed-in person). `Accept: application/json`, `*/*`, `/api/` paths and htmx requests get
the JSON error as before. A refused identity never gets the layout (tests/test_hardening_auth
checks its JSON); a visitor who is not signed in sees neither navigation nor banners.
Real PostgreSQL, the real app, in process.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from dashboard.app import create_app
from dashboard.runs.service import RunService
from dashboard.settings import Settings
from tests.peer import client_from, csrf_token

# What Chromium sends when it navigates to a page.
BROWSER = {
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
    "image/webp,*/*;q=0.8"
}
JSON = {"accept": "application/json"}
HTMX = {"accept": "*/*", "hx-request": "true"}
PROXY = "127.0.0.1"  # the default trusted proxy


def app_for(db_url: str, **env: str) -> Litestar:
    base = {"DASHBOARD_DATABASE_URL": db_url, "DASHBOARD_SECRET_KEY": "k" * 32}
    return create_app(Settings.from_env(base | env))


def error_page(r: Any, status: int) -> str:
    """The page's text, after checking it is the error page in the layout."""
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("text/html"), r.headers["content-type"]
    html = str(r.text)
    assert html.startswith("<!doctype html>"), html[:100]
    assert 'href="/static/style.css"' in html and 'class="topbar"' in html
    assert f'id="error-page" data-status="{status}"' in html
    assert f'<span class="error-status">{status}</span>' in html
    assert re.search(r'<a href="/" id="error-home">', html), "no link home"
    rid = r.headers["x-request-id"]
    assert f"<code>{rid}</code>" in html, "the page does not quote its request id"
    return html


def message(html: str) -> str:
    found = re.search(r'id="error-message">(.*?)</p>', html, re.S)
    assert found, html
    return found.group(1).strip()


async def test_404_is_a_page_for_a_browser_and_json_for_everyone_else(db_url: str) -> None:
    async with AsyncTestClient(app_for(db_url, DASHBOARD_AUTH_MODE="none")) as client:
        for path in ("/no-such-page", "/runs/424242"):
            html = error_page(await client.get(path, headers=BROWSER), 404)
            assert "<nav>" in html and "local · admin" in html  # the layout of a signed-in page
            said = message(html)
            assert said in ("There is no page at /no-such-page.", "run 424242 does not exist."), (
                said
            )
        # the runs area's own 404 keeps its link to the list
        assert (
            'href="/runs">All runs</a>' in (await client.get("/runs/424242", headers=BROWSER)).text
        )
        for headers in (JSON, {"accept": "*/*"}, {}, HTMX):
            r = await client.get("/no-such-page", headers=headers)
            assert r.status_code == 404 and r.json() == {"error": "Not Found", "status_code": 404}
            assert r.headers["x-request-id"], headers
        api = await client.get("/api/no-such-thing", headers=BROWSER)
        assert api.status_code == 404 and api.json()["status_code"] == 404


async def test_405_and_400_are_pages_for_a_browser(db_url: str) -> None:
    async with AsyncTestClient(app_for(db_url, DASHBOARD_AUTH_MODE="none")) as client:
        token = await csrf_token(client)
        html = error_page(
            await client.post("/healthz", headers=BROWSER | {"x-csrftoken": token}), 405
        )
        assert message(html) == "/healthz does not answer POST requests."
        bad = await client.get("/audit", params={"action": "\x00"}, headers=BROWSER)
        assert bad.status_code == 400 and "control character" in bad.text
        as_json = await client.get("/api/audit", params={"action": "\x00"}, headers=BROWSER)
        assert as_json.status_code == 400 and "control character" in as_json.json()["error"]


async def test_403_for_a_viewer_is_a_page_naming_the_role_needed(db_url: str) -> None:
    app = app_for(db_url, DASHBOARD_AUTH_MODE="proxy", DASHBOARD_ROLES="*=viewer")
    async with client_from(app, PROXY) as client:
        who = {"x-forwarded-user": "vic"}
        token = await csrf_token(client, "/api/migrations")
        form = {"direction": "upgrade", "target": "heads", "_csrf_token": token}
        page = await client.post("/runs", data=form, headers=BROWSER | who)
        html = error_page(page, 403)
        assert message(html) == "vic has role viewer; this action needs operator."
        assert "<nav>" in html and "vic · viewer" in html
        api = await client.post(
            "/api/runs",
            json={"direction": "upgrade", "target": "heads"},
            headers=JSON | who | {"x-csrftoken": token},
        )
        assert api.status_code == 403
        assert api.json()["error"] == "vic has role viewer; this action needs operator"
        # no identity at all (no X-Forwarded-User): 401 as a page without the navigation
        anon = error_page(await client.get("/locks", headers=BROWSER), 401)
        assert "<nav>" not in anon and "anonymous" not in anon
        assert "X-Forwarded-User" in message(anon)


async def test_password_mode_sends_a_browser_to_sign_in_and_shows_no_navigation_before(
    db_url: str, tmp_path: Path
) -> None:
    app = app_for(
        db_url,
        DASHBOARD_AUTH_MODE="password",
        DASHBOARD_USERS_FILE=str(tmp_path / "users.txt"),
    )
    async with AsyncTestClient(app) as client:
        r = await client.get("/locks", headers=BROWSER, follow_redirects=False)
        assert r.status_code in (302, 303, 307) and r.headers["location"] == "/login?next=%2Flocks"
        missing = await client.get("/no-such-page", headers=BROWSER)
        assert missing.status_code == 404
        html = missing.text
        assert '<a href="/" id="error-home">' in html  # home: the sign-in form, for now
        assert "<nav>" not in html and "anonymous" not in html


async def test_an_unexpected_exception_is_a_500_page_that_tells_nothing_of_the_cause(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: RunService, limit: int = 50) -> list[dict[str, Any]]:
        raise RuntimeError("the secret cause")

    async with AsyncTestClient(app_for(db_url, DASHBOARD_AUTH_MODE="none")) as client:
        assert (await client.get("/api/runs")).status_code == 200  # the state schema exists
        monkeypatch.setattr(RunService, "list_runs", broken)
        html = error_page(await client.get("/runs", headers=BROWSER), 500)
        assert "the secret cause" not in html and "RuntimeError" not in html
        assert (
            message(html) == "The dashboard failed to answer this request. The error is in its log."
        )
        r = await client.get("/api/runs", headers=BROWSER)
        assert r.status_code == 500
        assert r.json() == {"error": "internal error (logged)", "status_code": 500}

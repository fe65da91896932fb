"""The Migrations page says who applied each revision, when, and through which run: an
upgrade requested by carol and approved by bob; the revisions applied before the
dashboard; a revision the dashboard undid and someone applied again by hand."""

from __future__ import annotations

import html
import re

from tests.approval_support import dashboard
from tests.migrate import alembic_to
from tests.runs_support import BASE, DEMO


async def test_applied_history_says_who_applied_each_revision(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        # nothing run through the dashboard yet: everything applied came from outside
        body = (await api.get("vic", "/api/migrations")).json()
        assert body["applied_by"][BASE]["kind"] == "outside"
        assert body["applied_by_error"] is None

        run = await api.request_run("carol", [BASE], "+1")
        assert (await api.approve("bob", run["id"])).status_code == 200
        assert (await api.post("carol", f"/api/runs/{run['id']}/execute")).status_code == 202
        done = await api.finished(run["id"])
        assert done["status"] == "succeeded", done
        (rev,) = done["verified_revs"]

        body = (await api.get("vic", "/api/migrations")).json()
        mine = body["applied_by"][rev]
        assert mine["kind"] == "run" and mine["run_id"] == run["id"]
        assert (mine["requested_by"], mine["approved_by"]) == ("carol", "bob")
        assert mine["run_status"] == "succeeded"
        assert re.fullmatch(
            rf"applied \d{{4}}-\d\d-\d\d \d\d:\d\d UTC by carol \(approved by bob\), "
            rf"run {run['id']}",
            mine["text"],
        ), mine["text"]
        assert body["applied_by"][BASE]["text"] == "applied outside the dashboard"

        page = (await api.get("vic", "/migrations")).text
        row = page[page.index(f'<tr data-revision="{rev}"', page.index('id="applied"')) :]
        row = row[: row.index("</tr>")]
        cell = " ".join(html.unescape(re.sub(r"<[^>]+>", "", row)).split())
        assert f"by carol (approved by bob), run {run['id']}" in cell, cell
        assert f'href="/runs/{run["id"]}"' in row
        base_row = page[page.index(f'<tr data-revision="{BASE}"', page.index('id="applied"')) :]
        assert "applied outside the dashboard" in base_row[: base_row.index("</tr>")]

        # the dashboard undoes it (downgrades always need a second person) ...
        down = await api.request_run("carol", [rev], "-1", "downgrade")
        assert (await api.approve("bob", down["id"])).status_code == 200
        assert (await api.post("carol", f"/api/runs/{down['id']}/execute")).status_code == 202
        assert (await api.finished(down["id"]))["status"] == "succeeded"
        body = (await api.get("vic", "/api/migrations")).json()
        assert rev not in body["applied_by"]  # not applied now: not described
        # ... and someone applies it again by hand: the dashboard did not apply it this time
        await alembic_to(db_url, DEMO, rev)
        api.dash.status.invalidate()
        body = (await api.get("vic", "/api/migrations")).json()
        again = body["applied_by"][rev]
        assert again["kind"] == "outside_after_undo" and again["run_id"] == down["id"]
        assert again["requested_by"] is None and again["approved_by"] is None
        assert again["text"].startswith(f"applied outside the dashboard (run {down['id']} undid")


async def test_who_applied_is_unknown_not_outside_without_the_runs(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        runs, api.dash.runs = api.dash.runs, None
        try:
            body = (await api.get("vic", "/api/migrations")).json()
            assert body["applied_by"] is None and "no runs" in body["applied_by_error"]
            page = (await api.get("vic", "/migrations")).text
            assert "applied outside the dashboard" not in page
            assert "unknown: the dashboard keeps no runs here" in page
        finally:
            api.dash.runs = runs

"""`GET /api/review` and `dashboard review` on real PostgreSQL: DESIGN's fields for the demo
plan (rehearsed, exact), a statement pglast cannot parse (lock `unknown`, never a 500,
the failed rehearsal shown with its error and the static analysis still returned), bad
targets and directions (400), and the CLI's exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.approval_support import dashboard
from tests.migrate import alembic_to
from tests.runs_support import BACKFILL, BASE, CIC_REV, DEMO, ENUM_REV, HEAD, add_revision

STATEMENT_FIELDS = {
    "revision",
    "index",
    "sql",
    "fingerprint",
    "transactional",
    "locks",
    "rewrite",
    "scan",
    "findings",
    "conflicts",
}


async def test_review_of_the_demo_plan_has_design_fields(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        r = await api.get("vic", "/api/review", direction="upgrade", target="heads")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
    assert {"direction", "target", "from", "to", "exact", "sql_sha256", "risk"} <= body.keys()
    assert {"statements", "relations"} <= body.keys()
    assert body["from"] == [BASE] and body["to"] == [HEAD]
    assert body["exact"] is True and body["source"] == "rehearsal"
    assert body["risk"] == "high"
    assert body["data_dependent"] == [BACKFILL]
    stmts = body["statements"]
    assert stmts and all(STATEMENT_FIELDS <= s.keys() for s in stmts)
    by_sql = {s["sql"].split("(")[0].strip(): s for s in stmts}
    cic = next(s for s in stmts if "CONCURRENTLY" in s["sql"])
    assert cic["transactional"] is False and cic["in_transaction"] is False
    assert cic["locks"] == [{"relation": "orders", "mode": "ShareUpdateExclusiveLock"}]
    drop = next(s for s in stmts if "DROP COLUMN legacy_phone" in s["sql"])
    assert drop["locks"] == [{"relation": "customers", "mode": "AccessExclusiveLock"}]
    assert [f["rule"] for f in drop["findings"]] == ["ban-drop-column"]
    assert drop["findings"][0]["severity"] == "high" and drop["findings"][0]["safer"]
    assert all(len(s["fingerprint"]) == 16 for s in stmts)
    # the rehearsal's own view of the locks agrees with the static analysis
    assert all(s["disagreements"] == [] for s in stmts), [s["disagreements"] for s in stmts]
    assert any(s["observed_locks"] for s in stmts if s["in_transaction"])
    assert {r["name"] for r in body["relations"]} >= {"orders", "customers"}
    assert all(r["bytes"] > 0 for r in body["relations"])
    assert by_sql  # every statement parsed into a name
    # the steps outside a transaction, per revision, with what a failure would leave
    outside = {n["revision"]: n for n in body["non_transactional"]}
    assert list(outside) == [ENUM_REV, CIC_REV]  # plan order, nothing else
    by_index = {s["index"]: s for s in stmts}
    for n in outside.values():
        assert n["statements"] and n["leaves"] and n["note"]
        for x in n["statements"]:
            assert by_index[x["index"]]["sql"] == x["sql"]
            assert by_index[x["index"]]["in_transaction"] is False
    assert [x["index"] for x in outside[CIC_REV]["statements"]] == [cic["index"]]
    [index_left] = outside[CIC_REV]["leaves"]
    assert "INVALID index ix_orders_customer_created" in index_left
    assert "DROP INDEX CONCURRENTLY ix_orders_customer_created" in index_left
    assert "IF NOT EXISTS will then silently skip it" in index_left
    [enum_left] = outside[ENUM_REV]["leaves"]
    assert "'refunded' stays in order_status" in enum_left
    assert "not recorded as applied" in enum_left
    for rev, n in outside.items():
        assert f"{rev} is not recorded as applied" in n["note"]


async def test_unparseable_statement_is_unknown_and_a_failed_rehearsal_is_shown(
    db_url: str, demo_scripts: Path
) -> None:
    add_revision(demo_scripts, "uu01nosql001", HEAD, 'op.execute("FROBNICATE THE orders")')
    await alembic_to(db_url, demo_scripts, HEAD)
    async with dashboard(db_url, demo_scripts) as api:
        r = await api.get("vic", "/api/review", direction="upgrade", target="heads")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["exact"] is False
    assert "uu01nosql001" in (body["note"] or "") + (body["rehearsal_error"] or "")
    [stmt] = body["statements"]
    assert stmt["locks"][0]["mode"] == "unknown" and stmt["parse_error"]
    assert body["risk"] in ("medium", "high")
    assert "unparsed-statement" in [f["rule"] for f in stmt["findings"]]


async def test_bad_target_and_direction_are_400(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        bad_target = await api.get("vic", "/api/review", direction="upgrade", target="nope")
        bad_direction = await api.get("vic", "/api/review", direction="sideways", target="heads")
    assert bad_target.status_code == 400 and "nope" in bad_target.text
    assert bad_direction.status_code == 400


def _cli(db_url: str, *args: str, scripts: Path = DEMO) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DASHBOARD_DATABASE_URL": db_url,
        "DASHBOARD_SCRIPT_LOCATION": str(scripts),
    }
    return subprocess.run(
        [sys.executable, "-m", "dashboard.cli", "review", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_cli_exit_codes_table_and_json(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    table = _cli(db_url)
    assert table.returncode == 5, table.stderr
    assert "risk:  HIGH" in table.stdout and "ban-drop-column" in table.stdout
    assert "steps outside a transaction" in table.stdout
    assert "INVALID index ix_orders_customer_created" in " ".join(table.stdout.split())
    never = _cli(db_url, "--json", "--fail-on", "never")
    assert never.returncode == 0, never.stderr
    assert json.loads(never.stdout)["risk"] == "high"
    # only up to the first revision after base: medium and below pass --fail-on high
    first = _cli(db_url, "--target", "+1", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout)["risk"] in ("none", "low", "medium")
    bad = _cli(db_url, "--target", "nope")
    assert bad.returncode == 2 and "nope" in bad.stderr
    gone = _cli("postgresql://postgres@127.0.0.1:1/nothing")
    assert gone.returncode == 1 and "unreachable" in gone.stderr


async def test_bad_acknowledgements_are_400_and_record_nothing(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url, DASHBOARD_REQUIRE_APPROVAL="false") as api:
        body = {"direction": "upgrade", "target": "heads", "expected_current": [BASE]}
        for ack, needle in (
            ("yes", "must be a list"),
            ([{"revision": BACKFILL, "rule": "data-dependent"}], "needs a reason"),
            ([{"revision": "nope", "rule": "data-dependent", "reason": "x"}], "no 'data"),
        ):
            r = await api.post("carol", "/api/runs", {**body, "acknowledge": ack})
            assert r.status_code == 400 and needle in r.text, r.text
        missing = await api.post("carol", "/api/runs", body)
        assert missing.status_code == 409 and "acknowledgement_required" in missing.text
        assert (await api.get("vic", "/api/runs")).json()["runs"] == []
        refusals = await api.audit(action="run.request")
        assert len(refusals) == 4 and {e["outcome"] for e in refusals} == {"refused"}

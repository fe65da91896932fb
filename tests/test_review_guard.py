"""What is approved is what runs (real PostgreSQL, the real runner): a revision that sends a
statement the review did not show is stopped before the statement reaches the server — a
transactional revision rolls back, a non-transactional statement is never sent — the run
fails naming the statement and the revision, and the audit records it. A data-dependent
revision needs an acknowledgement; then it may send data statements not seen ahead, never
a schema change.

The revisions below behave differently once a flag file exists: the rehearsal (at request
time) sees the harmless path; the flag is created after approval, before execution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dashboard.approvals.service import Approvals
from dashboard.review.report import DATA_DEPENDENT
from dashboard.runs.errors import RunConflict
from tests.migrate import alembic_to
from tests.runs_support import APPROVER, HEAD, REQUESTER, add_revision, running_runner, wait_done


async def fetchval(plain_url: str, sql: str) -> Any:
    conn = await asyncpg.connect(plain_url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def audit_actions(runner: Any, run_id: int) -> list[dict[str, Any]]:
    conn_url = runner.ctx.url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(conn_url)
    try:
        rows = await conn.fetch(
            "SELECT action, outcome, detail::text AS detail FROM dashboard.audit "
            "WHERE (detail->>'run_id')::bigint = $1 ORDER BY id",
            run_id,
        )
        return [dict(r) for r in rows]
    finally:
        await conn.close()


async def request_upgrade(runner: Any) -> Any:
    """tester requests the upgrade to heads from HEAD."""
    return await runner.request(
        actor=REQUESTER.display,
        address=None,
        direction="upgrade",
        target="heads",
        expected_current=[HEAD],
    )


async def request_and_approve(runner: Any, acknowledge: object = None) -> int:
    run = await request_upgrade(runner)
    await Approvals(runner).approve(run.id, APPROVER, acknowledge=acknowledge)
    return int(run.id)


@pytest.mark.parametrize("transactional", [True, False], ids=["transactional", "autocommit"])
async def test_a_statement_that_was_not_shown_is_refused_before_it_is_sent(
    db_url: str, plain_db_url: str, demo_scripts: Path, tmp_path: Path, transactional: bool
) -> None:
    flag = tmp_path / "sneak"
    if transactional:
        body = f"""
        from pathlib import Path
        op.create_table("guard_t", sa.Column("id", sa.Integer, primary_key=True))
        if not op.get_context().as_sql and Path({str(flag)!r}).exists():
            op.execute("DROP TABLE customers CASCADE")
        """
    else:
        body = f"""
        from pathlib import Path
        with op.get_context().autocommit_block():
            op.execute("CREATE INDEX CONCURRENTLY guard_seen ON orders (id)")
            if not op.get_context().as_sql and Path({str(flag)!r}).exists():
                op.execute("CREATE INDEX CONCURRENTLY guard_unseen ON customers (id)")
        """
    add_revision(demo_scripts, "gg01guard001", HEAD, body)
    await alembic_to(db_url, demo_scripts, HEAD)
    async with running_runner(db_url, demo_scripts, require_approval=True) as runner:
        run_id = await request_and_approve(runner)
        pins = (await runner.get(run_id))["statement_pins"]
        assert pins["exact"] is True, pins
        [rev] = [r for r in pins["revisions"] if r["revision"] == "gg01guard001"]
        assert len(rev["fingerprints"]) == 1 and not rev["data_dependent"]
        flag.write_text("now the revision does something else")
        await Approvals(runner).execute(run_id, REQUESTER)
        run = await wait_done(runner, run_id)
    assert run["status"] == "failed", run
    assert "statement refused before it reached the server" in run["error"]
    assert "gg01guard001" in run["error"]
    unseen = "DROP TABLE customers" if transactional else "guard_unseen"
    assert unseen in run["error"]
    assert run["error_detail"]["refused"]["revision"] == "gg01guard001"
    # nothing of it reached the server; the version table did not move
    assert await fetchval(plain_db_url, "SELECT to_regclass('customers') IS NOT NULL")
    assert await fetchval(plain_db_url, "SELECT version_num FROM alembic_version") == HEAD
    if transactional:
        # the revision's transaction rolled back: its shown statement left nothing either
        assert await fetchval(plain_db_url, "SELECT to_regclass('guard_t') IS NULL")
    else:
        # the autocommit statement that was shown ran; the unseen one was never sent
        assert await fetchval(plain_db_url, "SELECT to_regclass('guard_seen') IS NOT NULL")
        assert await fetchval(plain_db_url, "SELECT to_regclass('guard_unseen') IS NULL")
    actions = await audit_actions(runner, run_id)
    refused = [a for a in actions if a["action"] == "run.statement_refused"]
    assert len(refused) == 1 and "gg01guard001" in refused[0]["detail"]


async def test_data_dependent_revision_needs_an_acknowledgement_and_sends_data_only(
    db_url: str, plain_db_url: str, demo_scripts: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "sneak"
    body = f"""
    from pathlib import Path
    bind = op.get_bind()
    ids = [r[0] for r in bind.execute(sa.text("SELECT id FROM customers ORDER BY id LIMIT 10"))]
    for i in ids:
        bind.execute(sa.text("UPDATE customers SET name = name WHERE id = :i"), {{"i": i}})
    if ids and Path({str(flag)!r}).exists():
        op.execute("DROP TABLE orders CASCADE")
    """
    add_revision(demo_scripts, "gg02data0001", HEAD, body)
    await alembic_to(db_url, demo_scripts, HEAD)
    conn = await asyncpg.connect(plain_db_url)
    try:
        await conn.execute(
            "INSERT INTO customers (name, email) SELECT 'c' || g, 'c' || g || '@x' "
            "FROM generate_series(1, 3) g"
        )
    finally:
        await conn.close()
    async with running_runner(db_url, demo_scripts, require_approval=True) as runner:
        run = await request_upgrade(runner)
        with pytest.raises(RunConflict) as refused:
            await Approvals(runner).approve(run.id, APPROVER)
        assert refused.value.code == "acknowledgement_required"
        assert "gg02data0001" in refused.value.message
        ack = [{"revision": "gg02data0001", "rule": DATA_DEPENDENT, "reason": "3 rows"}]
        await Approvals(runner).approve(run.id, APPROVER, acknowledge=ack)
        pins = (await runner.get(run.id))["statement_pins"]
        assert pins["acknowledgements"][0]["reason"] == "3 rows"
        # first run: the UPDATEs were never seen on the empty scratch database, but they
        # are data statements of an acknowledged data-dependent revision
        await Approvals(runner).execute(run.id, REQUESTER)
        done = await wait_done(runner, run.id)
        assert done["status"] == "succeeded", done

        # the same revision, now sending a schema change nobody saw: refused
        await alembic_to(db_url, demo_scripts, HEAD, down=True)
        flag.write_text("x")
        run2 = await request_upgrade(runner)
        await Approvals(runner).approve(run2.id, APPROVER, acknowledge=ack)
        await Approvals(runner).execute(run2.id, REQUESTER)
        failed = await wait_done(runner, run2.id)
    assert failed["status"] == "failed", failed
    assert "DROP TABLE orders" in failed["error"] and "never allowed" in failed["error"]
    assert await fetchval(plain_db_url, "SELECT to_regclass('orders') IS NOT NULL")

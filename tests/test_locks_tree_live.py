"""The blocking tree over real lock pile-ups (separate asyncpg connections), read through
the sampler and `/api/locks` / `/locks` with Litestar's AsyncTestClient."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from tests.lock_chain import Pile, app_for, find, pids, refresh


async def locks(client: Any) -> dict[str, Any]:
    await refresh(client)
    r = await client.get("/api/locks")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_chain_a_holds_b_waits_c_waits_on_b(db_url: str, plain_db_url: str) -> None:
    """The classic migration outage: a long transaction, DDL queued behind it, reads behind
    the DDL. Root A, then B (AccessExclusiveLock), then C (AccessShareLock)."""
    app = app_for(db_url)
    async with Pile(plain_db_url) as pile, AsyncTestClient(app) as client:
        await pile.sql("CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
        a = await pile.session("app-a")
        b = await pile.session("migration-b")
        c = await pile.session("reader-c")
        await a.execute("BEGIN; LOCK TABLE accounts IN SHARE MODE")
        await pile.block(b, "ALTER TABLE accounts ADD COLUMN note text")
        await pile.block(c, "SELECT count(*) FROM accounts")
        pa, pb, pc = a.get_server_pid(), b.get_server_pid(), c.get_server_pid()

        body = await locks(client)
        assert body["blocked_count"] == 2
        assert pids(body["roots"]) == [pa]
        root = body["roots"][0]
        assert root["blast_radius"] == 2
        assert root["application_name"] == "app-a"
        assert root["state"] == "idle in transaction"
        assert root["backend_start"]
        assert pids(root["blocked"]) == [pb]
        nb = root["blocked"][0]
        assert nb["mode"] == "AccessExclusiveLock"
        assert nb["relation"] == "public.accounts"
        assert nb["blast_radius"] == 1
        assert nb["wait_age_s"] is not None and nb["wait_age_s"] >= 0
        assert nb["wait_age_approx"] is False  # pg_locks.waitstart on PostgreSQL 14+
        assert "ALTER TABLE accounts" in nb["query"]
        assert pids(nb["blocked"]) == [pc]
        nc = nb["blocked"][0]
        assert nc["mode"] == "AccessShareLock" and nc["relation"] == "public.accounts"
        assert nc["blast_radius"] == 0 and nc["blocked"] == []
        assert nc["blocked_by"] == [pb]

        # The interface the pool area relies on.
        snap = client.app.state.dashboard.sampler.latest
        assert snap.blocked_by == {pb: [pa], pc: [pb]}
        assert snap.blast_radius == {pa: 2, pb: 1}
        assert snap.sessions[pa].xact_age_s is not None
        assert snap.sessions[pc].application_name == "reader-c"

        page = await client.get("/locks")
        assert page.status_code == 200
        assert f'data-root-pid="{pa}"' in page.text
        assert 'data-blocked-count="2"' in page.text
        assert f'data-pid="{pc}" data-depth="2"' in page.text


async def test_waiter_with_two_blockers_appears_under_both(db_url: str, plain_db_url: str) -> None:
    app = app_for(db_url)
    async with Pile(plain_db_url) as pile, AsyncTestClient(app) as client:
        await pile.sql("CREATE TABLE shared_t (id int)")
        h1 = await pile.session("holder-1")
        h2 = await pile.session("holder-2")
        w = await pile.session("waiter")
        await h1.execute("BEGIN; LOCK TABLE shared_t IN ACCESS SHARE MODE")
        await h2.execute("BEGIN; LOCK TABLE shared_t IN ROW SHARE MODE")
        await pile.block(w, "BEGIN; LOCK TABLE shared_t IN ACCESS EXCLUSIVE MODE")
        p1, p2, pw = h1.get_server_pid(), h2.get_server_pid(), w.get_server_pid()

        body = await locks(client)
        assert body["blocked_count"] == 1
        assert sorted(pids(body["roots"])) == sorted([p1, p2])
        for root in body["roots"]:
            assert root["blast_radius"] == 1
            assert pids(root["blocked"]) == [pw]
            assert sorted(root["blocked"][0]["blocked_by"]) == sorted([p1, p2])
            assert root["blocked"][0]["relation"] == "public.shared_t"


async def test_two_independent_roots_sorted_by_blast_radius(db_url: str, plain_db_url: str) -> None:
    app = app_for(db_url)
    async with Pile(plain_db_url) as pile, AsyncTestClient(app) as client:
        await pile.sql("CREATE TABLE small_t (id int); CREATE TABLE big_t (id int)")
        r_small = await pile.session("root-small")
        r_big = await pile.session("root-big")
        await r_small.execute("BEGIN; LOCK TABLE small_t IN ACCESS EXCLUSIVE MODE")
        await r_big.execute("BEGIN; LOCK TABLE big_t IN ACCESS EXCLUSIVE MODE")
        ws = await pile.session("w-small")
        await pile.block(ws, "SELECT * FROM small_t")
        big_waiters = []
        for i in range(3):
            c = await pile.session(f"w-big-{i}")
            await pile.block(c, "SELECT * FROM big_t")
            big_waiters.append(c.get_server_pid())

        body = await locks(client)
        assert body["blocked_count"] == 4
        assert pids(body["roots"]) == [r_big.get_server_pid(), r_small.get_server_pid()]
        big, small = body["roots"]
        assert big["blast_radius"] == 3 and sorted(pids(big["blocked"])) == sorted(big_waiters)
        assert small["blast_radius"] == 1 and pids(small["blocked"]) == [ws.get_server_pid()]
        assert big["blocking_on"] == ["public.big_t"]
        assert all(n["mode"] == "AccessShareLock" for n in big["blocked"])


async def test_idle_in_transaction_holder_with_row_lock_waiters(
    db_url: str, plain_db_url: str
) -> None:
    """A session that holds row locks while idle in transaction: waiters wait on its
    transaction id; the relation still comes out (through the tuple lock)."""
    app = app_for(db_url, DASHBOARD_LONG_QUERY_S="0")
    async with Pile(plain_db_url) as pile, AsyncTestClient(app) as client:
        await pile.sql("CREATE TABLE orders (id int PRIMARY KEY, status text)")
        await pile.sql("INSERT INTO orders VALUES (1, 'new'), (2, 'new')")
        idle = await pile.session("forgot-to-commit")
        await idle.execute("BEGIN; UPDATE orders SET status = 'paid' WHERE id = 1")
        w1 = await pile.session("worker-1")
        w2 = await pile.session("worker-2")
        await pile.block(w1, "UPDATE orders SET status = 'shipped' WHERE id = 1")
        await pile.block(w2, "UPDATE orders SET status = 'void' WHERE id = 1")
        pi, p1, p2 = idle.get_server_pid(), w1.get_server_pid(), w2.get_server_pid()

        body = await locks(client)
        root = find(body["roots"], pi)
        assert root["state"] == "idle in transaction"
        assert root["blast_radius"] == 2
        n1 = find(root["blocked"], p1)
        assert n1["locktype"] == "transactionid" and n1["mode"] == "ShareLock"
        assert n1["relation"] == "public.orders"
        # worker-2 queues on the row (tuple lock) behind worker-1
        n2 = find(n1["blocked"], p2)
        assert n2["relation"] == "public.orders"
        assert n2["locktype"] == "tuple"

        r = await client.get("/api/activity")
        assert r.status_code == 200
        act = r.json()
        idle_rows = {s["pid"]: s for s in act["idle_in_transaction"]}
        assert pi in idle_rows
        assert idle_rows[pi]["application_name"] == "forgot-to-commit"
        assert idle_rows[pi]["xact_age_s"] >= 0
        assert act["idle_in_transaction_count"] >= 1
        long_pids = {s["pid"] for s in act["long_running"]}
        assert {p1, p2} <= long_pids  # threshold 0: every active query is "long"


async def test_no_locks_no_roots(db_url: str) -> None:
    app = app_for(db_url)
    async with AsyncTestClient(app) as client:
        body = await locks(client)
        assert body["blocked_count"] == 0 and body["roots"] == []
        assert body["sampler"]["ok"] is True
        page = await client.get("/locks", headers={"HX-Request": "true"})
        assert page.status_code == 200 and "<html" not in page.text
        assert "No session is waiting on a lock" in page.text

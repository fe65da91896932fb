"""The Activity page's full session list over a real PostgreSQL, during a real pile-up:
every client backend listed, lock waiters counted and listed as waiting, server-side sort
and filter with clear 400s, and cancel/terminate from the list with the Locks page's
guards."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from tests.lock_chain import Pile, app_for, csrf_headers, refresh
from tests.peer import client_from

PROXY = {
    "DASHBOARD_AUTH_MODE": "proxy",
    "DASHBOARD_ROLES": "alice=admin,carol=operator,*=viewer",
}


class SessionTable(HTMLParser):
    """Rows of table#session-table: pid -> {"state", "waiting", "actions": [hx-get ...]};
    and whether the list's error banner is there."""

    def __init__(self) -> None:
        super().__init__()
        self.in_table = False
        self.row: dict[str, Any] | None = None
        self.rows: dict[int, dict[str, Any]] = {}
        self.order: list[int] = []
        self.error: str | None = None
        self.section: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section" and a.get("id") == "sessions":
            self.section = a
        if a.get("id") == "sessions-error":
            self.error = a.get("data-error", "")
        if tag == "table" and a.get("id") == "session-table":
            self.in_table = True
        if self.in_table and tag == "tr" and "data-pid" in a:
            pid = int(a["data-pid"])
            self.row = {"state": a["data-state"], "waiting": a["data-waiting"], "actions": []}
            self.rows[pid] = self.row
            self.order.append(pid)
        if self.row is not None and tag == "button" and "hx-get" in a:
            self.row["actions"].append(a["hx-get"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_table = False
        if tag == "tr":
            self.row = None


def table(html: str) -> SessionTable:
    p = SessionTable()
    p.feed(html)
    return p


async def pile_up(pile: Pile) -> dict[str, asyncpg.Connection]:
    """A holder idle in transaction after an UPDATE; a migration queued behind it; two
    readers queued behind the migration."""
    await pile.sql(
        "CREATE TABLE IF NOT EXISTS accounts (id int PRIMARY KEY, balance int);"
        "INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 5) g ON CONFLICT DO NOTHING"
    )
    holder = await pile.session("billing-api")
    await holder.execute("BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1")
    migration = await pile.session("alembic")
    await pile.block(migration, "ALTER TABLE accounts ADD COLUMN note text")
    readers = []
    for i in range(2):
        r = await pile.session(f"web-{i}")
        await pile.block(r, f"SELECT balance FROM accounts WHERE id = {i + 2}")
        readers.append(r)
    return {"holder": holder, "migration": migration, "web-0": readers[0], "web-1": readers[1]}


def by_pid(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {r["pid"]: r for r in rows}


async def test_pileup_lists_the_holder_and_the_waiters_as_waiting(
    db_url: str, plain_db_url: str
) -> None:
    app = app_for(db_url)
    async with Pile(plain_db_url) as pile, AsyncTestClient(app) as client:
        s = await pile_up(pile)
        pids = {name: c.get_server_pid() for name, c in s.items()}
        waiters = [pids["migration"], pids["web-0"], pids["web-1"]]
        snap = await refresh(client)

        body = (await client.get("/api/activity")).json()
        rows = by_pid(body["sessions"])
        assert body["sessions_total"] == body["total"] == len(body["sessions"])
        assert body["session_filter"] == {
            "sort": "xact_age",
            "dir": "desc",
            "state": None,
            "q": None,
        }
        for r in body["sessions"]:
            for key in ("pid", "backend_start", "usename", "application_name", "client_addr"):
                assert key in r
            for key in ("state", "wait_event_type", "wait_event", "xact_age_s", "query_age_s"):
                assert key in r
            assert "query" in r

        holder = rows[pids["holder"]]
        assert holder["state"] == "idle in transaction" and holder["waiting"] is False
        assert holder["display_state"] == "idle in transaction"
        assert holder["application_name"] == "billing-api"
        assert "UPDATE accounts" in holder["query"]
        assert holder["blast_radius"] == 3 and holder["signalable"] is True
        for pid in waiters:
            w = rows[pid]
            assert w["state"] == "active"  # as PostgreSQL says it
            assert w["waiting"] is True and w["display_state"] == "waiting"
            assert w["wait_event_type"] == "Lock"
            assert w["backend_start"] == snap.sessions[pid].backend_start.isoformat()
        assert rows[pids["migration"]]["blocked_by"] == [pids["holder"]]
        assert rows[pids["migration"]]["wait_mode"] == "AccessExclusiveLock"

        # by_state counts them as waiting, and agrees with the list
        by_state = body["by_state"]
        assert sum(by_state.values()) == body["total"]
        assert by_state["waiting"] == sum(1 for r in body["sessions"] if r["waiting"])
        assert by_state["waiting"] >= 3
        assert by_state.get("active", 0) == sum(
            1 for r in body["sessions"] if r["display_state"] == "active"
        )
        assert "waiting" in {seg["state"] for seg in body["budget_bar"]}

        # the dashboard's own connections are listed, never signalable
        own = [r for r in body["sessions"] if r["is_dashboard"]]
        assert own and not any(r["signalable"] for r in own)

        # filter on the server
        waiting = (await client.get("/api/activity", params={"state": "waiting"})).json()
        assert {r["display_state"] for r in waiting["sessions"]} == {"waiting"}
        assert set(waiters) <= {r["pid"] for r in waiting["sessions"]}
        assert waiting["sessions_matched"] == len(waiting["sessions"]) < waiting["sessions_total"]
        r = await client.get(
            "/api/activity", params={"state": "idle in transaction", "q": "BILLING-api"}
        )
        assert [x["pid"] for x in r.json()["sessions"]] == [pids["holder"]]
        r = await client.get("/api/activity", params={"q": "ADD COLUMN note"})
        assert [x["pid"] for x in r.json()["sessions"]] == [pids["migration"]]

        # sort on the server: by transaction age the holder (oldest) comes first of ours
        ours = set(pids.values())
        for params, first in (
            ({"sort": "xact_age", "dir": "desc"}, pids["holder"]),
            ({"sort": "state", "dir": "asc"}, pids["migration"]),  # waiting before idle in tx
            ({"sort": "application", "dir": "desc"}, pids["web-1"]),
        ):
            got = (await client.get("/api/activity", params={**params, "q": "accounts"})).json()
            order = [x["pid"] for x in got["sessions"] if x["pid"] in ours]
            assert sorted(order) == sorted(ours), params
            assert order[0] == first, (params, order)
        apps = await client.get(
            "/api/activity", params={"sort": "application", "dir": "asc", "q": "accounts"}
        )
        names = [x["application_name"] for x in apps.json()["sessions"] if x["pid"] in ours]
        assert names == sorted(names, key=str.casefold)

        # the page: every session a row, waiters marked waiting, sorted like the JSON twin
        page = await client.get("/activity", params={"state": "waiting", "sort": "pid"})
        assert page.status_code == 200
        t = table(page.text)
        assert t.section["data-state-filter"] == "waiting" and t.section["data-sort"] == "pid"
        assert set(waiters) <= set(t.rows)
        assert {row["state"] for row in t.rows.values()} == {"waiting"}
        assert t.order == sorted(t.order)
        full = table((await client.get("/activity")).text)
        assert full.rows[pids["holder"]]["state"] == "idle in transaction"
        assert int(full.section["data-total"]) == body["total"]
        frag = await client.get("/activity", params={"q": "web-"}, headers={"HX-Request": "true"})
        assert "<html" not in frag.text
        assert set(table(frag.text).rows) >= {pids["web-0"], pids["web-1"]}


async def test_bad_sort_or_state_is_a_clear_400(db_url: str) -> None:
    async with AsyncTestClient(app_for(db_url)) as client:
        await refresh(client)
        for params, field in (
            ({"sort": "password"}, "sort"),
            ({"state": "sleeping"}, "state"),
            ({"dir": "sideways"}, "dir"),
            ({"q": "a\x01b"}, "q"),
        ):
            r = await client.get("/api/activity", params=params)
            assert r.status_code == 400, (params, r.text)
            body = r.json()
            assert body["extra"] == {"code": "invalid_parameter", "field": field}
            assert f"{field}" in body["error"]
        r = await client.get("/api/activity", params={"sort": "password"})
        assert "xact_age" in r.json()["error"]  # says what is allowed
        r = await client.get("/api/activity", params={"state": "sleeping"})
        assert "idle in transaction" in r.json()["error"]

        page = await client.get("/activity", params={"sort": "password"})
        assert page.status_code == 400
        t = table(page.text)
        assert t.error is not None and "sort" in t.error
        assert t.rows  # the unfiltered list is still shown, and says so
        assert "default order" in page.text
        frag = await client.get(
            "/activity", params={"state": "sleeping"}, headers={"HX-Request": "true"}
        )
        assert frag.status_code == 200  # htmx swaps only 2xx: the fragment says it
        assert table(frag.text).error is not None


async def test_cancel_and_terminate_from_the_list_with_the_guards(
    db_url: str, plain_db_url: str
) -> None:
    app = app_for(db_url)
    async with Pile(plain_db_url) as pile, AsyncTestClient(app) as client:
        s = await pile_up(pile)
        holder, web0 = s["holder"].get_server_pid(), s["web-0"].get_server_pid()
        await refresh(client)
        rows = by_pid((await client.get("/api/activity")).json()["sessions"])
        t = table((await client.get("/activity")).text)

        # what the list offers: cancel for a running (waiting) query, terminate for all;
        # no cancel for the idle-in-transaction holder; nothing for the dashboard's own
        assert any("action=cancel" in u for u in t.rows[web0]["actions"])
        assert any("action=terminate" in u for u in t.rows[web0]["actions"])
        assert not any("action=cancel" in u for u in t.rows[holder]["actions"])
        assert any("action=terminate" in u for u in t.rows[holder]["actions"])
        for pid, row in rows.items():
            if row["is_dashboard"] and pid in t.rows:
                assert t.rows[pid]["actions"] == [], pid
        cancel_url = next(u for u in t.rows[web0]["actions"] if "action=cancel" in u)
        assert f"/backends/{web0}/confirm" in cancel_url

        # the same confirmation fragment the Locks page opens
        frag = await client.get(cancel_url, headers={"HX-Request": "true"})
        assert frag.status_code == 200
        assert 'id="backend-confirm"' in frag.text and f"/api/backends/{web0}/cancel" in frag.text

        # a stale identity (another start time for that pid) is refused, nothing signalled
        bs = rows[web0]["backend_start"]
        stale = (datetime.fromisoformat(bs) - timedelta(seconds=1)).isoformat()
        headers = await csrf_headers(client)
        r = await client.post(
            f"/api/backends/{web0}/cancel", json={"backend_start": stale}, headers=headers
        )
        assert r.status_code == 409 and r.json()["outcome"] == "stale", r.text
        assert await pile.alive(web0) and not pile.tasks[1].done()
        # without the CSRF token: refused
        r = await client.post(f"/api/backends/{web0}/cancel", json={"backend_start": bs})
        assert r.status_code == 403

        # the real one: its query is cancelled, the session stays
        r = await client.post(
            f"/api/backends/{web0}/cancel", json={"backend_start": bs}, headers=headers
        )
        assert r.status_code == 200 and r.json()["outcome"] == "cancel_sent", r.text
        with pytest.raises(asyncpg.QueryCanceledError):
            await asyncio.wait_for(pile.tasks[1], 5)
        assert await pile.alive(web0)

        # terminating the holder (typed confirmation) releases the queue
        r = await client.post(
            f"/api/backends/{holder}/terminate",
            json={"backend_start": rows[holder]["backend_start"], "confirm": str(holder)},
            headers=headers,
        )
        assert r.status_code == 200 and r.json()["outcome"] == "terminated", r.text
        await asyncio.wait_for(pile.tasks[0], 10)  # the migration gets its lock
        await refresh(client)
        after = by_pid((await client.get("/api/activity")).json()["sessions"])
        assert holder not in after


async def test_the_list_offers_only_what_the_viewer_may_do(db_url: str, plain_db_url: str) -> None:
    app = app_for(db_url, **PROXY)
    async with Pile(plain_db_url) as pile, client_from(app) as client:
        s = await pile_up(pile)
        web0 = s["web-0"].get_server_pid()
        await refresh(client, app)

        async def offered(user: str) -> list[str]:
            html = (await client.get("/activity", headers={"X-Forwarded-User": user})).text
            return table(html).rows[web0]["actions"]

        viewer, operator, admin = (
            await offered("bob"),
            await offered("carol"),
            await offered("alice"),
        )
        assert viewer == []
        assert [("cancel" in u, "terminate" in u) for u in operator] == [(True, False)]
        assert {u.split("action=")[1].split("&")[0] for u in admin} == {"cancel", "terminate"}

    async with (
        Pile(plain_db_url) as pile,
        AsyncTestClient(app_for(db_url, DASHBOARD_DISABLE_KILL="true")) as client,
    ):
        s = await pile_up(pile)
        await refresh(client)
        t = table((await client.get("/activity")).text)
        assert t.rows[s["web-0"].get_server_pid()]["actions"] == []
        assert all(row["actions"] == [] for row in t.rows.values())

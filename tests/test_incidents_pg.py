"""Incidents on a real PostgreSQL: a real lock pile-up and a real pool exhaustion become
incidents, end, and are still listed by a new dashboard process; bad input is refused;
a state database that goes away costs nothing but a delay (detection goes on in memory).

The sampler is driven with `refresh` (the background loop is quiet: 60 s interval), and
DASHBOARD_INCIDENT_MIN_S=1 keeps "sustained" short.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dashboard.app import create_app
from dashboard.history.incidents import ADOPTED_NOTE
from dashboard.settings import Settings
from tests.conftest import create_database, drop_database
from tests.lock_chain import Pile, app_for, refresh
from tests.tcp_proxy import ThreadedPgProxy
from tests.waiting import wait_until_async

PAGE = {"accept": "text/html"}
FAST = {"DASHBOARD_INCIDENT_MIN_S": "1", "DASHBOARD_INCIDENT_MIN_BLOCKED": "3"}
ROW_SQL = "UPDATE accounts SET balance = balance + 1 WHERE id = 1"


def here() -> int:
    return sys._getframe(1).f_lineno


class Tags(HTMLParser):
    """Attributes of every element that has `attr`."""

    def __init__(self, attr: str) -> None:
        super().__init__()
        self.attr = attr
        self.found: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = {k: v or "" for k, v in attrs}
        if self.attr in d:
            d["_tag"] = tag
            self.found.append(d)


def tags(html: str, attr: str) -> list[dict[str, str]]:
    p = Tags(attr)
    p.feed(html)
    return p.found


async def start_pileup(pile: Pile, waiters: int = 3) -> tuple[Any, list[Any]]:
    """A holder idle in transaction after an UPDATE, `waiters` sessions blocked behind it."""
    await pile.sql("CREATE TABLE IF NOT EXISTS accounts (id int PRIMARY KEY, balance int)")
    await pile.sql("INSERT INTO accounts VALUES (1, 0) ON CONFLICT DO NOTHING")
    holder = await pile.session("t-holder")
    await holder.execute("BEGIN")
    await holder.execute(ROW_SQL)
    blocked = []
    for _ in range(waiters):
        w = await pile.session("t-waiter")
        await pile.block(w, ROW_SQL)
        blocked.append(w)
    return holder, blocked


async def end_pileup(pile: Pile, holder: Any) -> None:
    await holder.execute("ROLLBACK")
    await asyncio.gather(*pile.tasks)  # the waiters' UPDATEs go through
    pile.tasks.clear()


async def incidents(client: AsyncTestClient[Any], query: str = "") -> list[dict[str, Any]]:
    r = await client.get(f"/api/incidents{query}")
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["incidents"]
    return items


async def wait_incident(
    client: AsyncTestClient[Any],
    what: str,
    *,
    kind: str,
    root_pid: int | None = None,
    ended: bool | None = None,
    drive: bool = True,
    timeout_s: float = 20.0,
) -> dict[str, Any]:
    """Drive sampler cycles until /api/incidents lists a matching incident."""

    async def found() -> dict[str, Any] | None:
        if drive:
            await refresh(client)
        for inc in await incidents(client, f"?kind={kind}"):
            if root_pid is not None and inc["root_pid"] != root_pid:
                continue
            if ended is not None and (inc["ended_at"] is not None) != ended:
                continue
            return inc
        return None

    return await wait_until_async(found, timeout_s=timeout_s, interval_s=0.2, what=what)


# --- lock pile-up ---------------------------------------------------------------------------
async def test_pileup_incident_recorded_ended_and_listed_after_restart(
    db_url: str, plain_db_url: str
) -> None:
    async with Pile(plain_db_url) as pile:
        async with AsyncTestClient(app_for(db_url, DASHBOARD_INSTANCE_NAME="t-a", **FAST)) as c:
            assert await incidents(c) == []
            home = await c.get("/", headers=PAGE)
            assert 'id="incidents-none"' in home.text  # nothing in the last 24 h

            holder, waiters = await start_pileup(pile, 3)
            root = holder.get_server_pid()
            inc = await wait_incident(c, "the pile-up incident", kind="lock_pileup", root_pid=root)
            assert inc["ended_at"] is None and inc["ongoing"] is True
            assert inc["peak_blast_radius"] == 3
            assert inc["root"]["application"] == "t-holder"
            assert inc["root"]["state"] == "idle in transaction"
            assert "UPDATE accounts" in inc["root"]["query"]
            assert inc["service"] == "app" and inc["instance"] == "t-a"
            assert inc["summary"].startswith(f"pid {root} (idle in transaction, app t-holder)")

            # the tree at the peak names every waiter
            detail = (await c.get(f"/api/incidents/{inc['id']}")).json()
            tree = detail["peak"]["tree"]
            assert tree["pid"] == root
            seen, stack = set(), list(tree["blocked"])
            while stack:
                n = stack.pop()
                seen.add(n["pid"])
                stack.extend(n["blocked"])
            assert {w.get_server_pid() for w in waiters} <= seen

            # the Overview shows it open, linking to its page
            home = await c.get("/", headers=PAGE)
            cards = [t for t in tags(home.text, "data-incident-id") if t["_tag"] == "li"]
            assert [(t["data-incident-id"], t["data-ongoing"]) for t in cards] == [
                (str(inc["id"]), "true")
            ]
            assert f'href="/incidents/{inc["id"]}"' in home.text

            # it ends when the holder rolls back
            await end_pileup(pile, holder)
            done = await wait_incident(
                c, "the pile-up to end", kind="lock_pileup", root_pid=root, ended=True
            )
            assert done["id"] == inc["id"] and done["duration_s"] >= 1.0
            assert done["summary"] == (
                f"pid {root} (idle in transaction, app t-holder) blocked 3 sessions for "
                f"{done['duration']}"
            )
            assert len(await incidents(c, "?kind=lock_pileup")) == 1

    # a new dashboard process on the same database
    async with AsyncTestClient(app_for(db_url, DASHBOARD_INSTANCE_NAME="t-b")) as c2:
        [again] = await incidents(c2, "?kind=lock_pileup")
        assert again["id"] == inc["id"] and again["ended_at"] == done["ended_at"]
        assert again["root_pid"] == root and again["peak_blast_radius"] == 3
        page = await c2.get("/incidents", headers=PAGE)
        assert page.status_code == 200
        rows = [t for t in tags(page.text, "data-incident-id") if t["_tag"] == "tr"]
        assert [(r["data-incident-id"], r["data-root-pid"], r["data-ongoing"]) for r in rows] == [
            (str(inc["id"]), str(root), "false")
        ]
        bars = [t for t in tags(page.text, "data-incident-id") if t["_tag"] == "rect"]
        assert [b["data-incident-id"] for b in bars] == [str(inc["id"])]
        one = await c2.get(f"/incidents/{inc['id']}", headers=PAGE)
        assert one.status_code == 200
        [card] = [t for t in tags(one.text, "data-root-pid") if t.get("id") == "incident"]
        assert card["data-root-pid"] == str(root) and card["data-kind"] == "lock_pileup"
        tree_rows = [t for t in tags(one.text, "data-depth")]
        assert tree_rows[0]["data-pid"] == str(root) and len(tree_rows) >= 4


async def test_incident_left_open_is_continued_or_ended_by_the_next_process(
    db_url: str, plain_db_url: str
) -> None:
    env = {"DASHBOARD_INSTANCE_NAME": "t-same", **FAST}
    async with Pile(plain_db_url) as pile:
        holder, _ = await start_pileup(pile, 3)
        root = holder.get_server_pid()
        async with AsyncTestClient(app_for(db_url, **env)) as c:
            first = await wait_incident(c, "the pile-up", kind="lock_pileup", root_pid=root)
        # the dashboard restarts while the pile-up goes on: the same incident continues
        async with AsyncTestClient(app_for(db_url, **env)) as c:
            await refresh(c)  # one cycle: a new detection would need min_s, adoption not

            async def continued() -> dict[str, Any] | None:
                [inc] = await incidents(c, "?kind=lock_pileup")
                return inc if inc["updated_at"] > first["updated_at"] else None

            still = await wait_until_async(continued, what="the adopted incident to continue")
            assert still["id"] == first["id"] and still["ended_at"] is None
            assert still["started_at"] == first["started_at"]
        # it ends while no dashboard watches: the next one closes it when it was last seen
        await end_pileup(pile, holder)
        async with AsyncTestClient(app_for(db_url, **env)) as c:
            gone = await wait_incident(c, "the adopted close", kind="lock_pileup", ended=True)
            assert gone["id"] == first["id"]
            assert gone["ended_at"] == gone["updated_at"]
            assert gone["note"] == ADOPTED_NOTE and ADOPTED_NOTE in gone["summary"]
            assert len(await incidents(c)) == 1


async def test_an_incident_of_a_process_that_stopped_later_is_closed_too(
    db_url: str, plain_db_url: str
) -> None:
    """Replica A records a pile-up and stops; replica B was already running (it adopted
    nothing at its start). Once A's open incident has gone stale, B closes it as ended
    while nobody watched, instead of showing it as ongoing for ever."""
    async with Pile(plain_db_url) as pile:
        holder, _ = await start_pileup(pile, 3)
        async with AsyncTestClient(app_for(db_url, DASHBOARD_INSTANCE_NAME="t-a", **FAST)) as a:
            first = await wait_incident(a, "the pile-up", kind="lock_pileup")
        await end_pileup(pile, holder)
        app_b = app_for(db_url, DASHBOARD_INSTANCE_NAME="t-b", **FAST)
        async with AsyncTestClient(app_b) as b:
            service = app_b.state.dashboard.incidents
            assert service is not None
            service.adopt_every_s = 0.0
            # A's incident is fresh: B leaves it alone...
            await refresh(b)
            [still] = await incidents(b, "?kind=lock_pileup")
            assert still["ended_at"] is None
            # ...until A has been silent for longer than a live process ever is
            await pile.sql(
                "UPDATE dashboard.incidents SET updated_at = updated_at - interval '10 minutes'"
            )

            async def closed() -> dict[str, Any] | None:
                await refresh(b)
                [inc] = await incidents(b, "?kind=lock_pileup")
                return inc if inc["ended_at"] is not None else None

            gone = await wait_until_async(closed, what="the stale incident to be closed")
            assert gone["id"] == first["id"] and gone["note"] == ADOPTED_NOTE


# --- pool exhaustion ------------------------------------------------------------------------
@pytest.fixture
async def small_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(
        db_url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=2.0,
        connect_args={"server_settings": {"application_name": "t-pool-app"}},
    )
    yield eng
    await eng.dispose()


def pool_app(db_url: str, engine: AsyncEngine) -> Any:
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_SAMPLE_INTERVAL_S": "60",
            "DASHBOARD_INSTANCE_NAME": "t-pool",
            "DASHBOARD_SERVICE_NAME": "shop",
            **FAST,
        }
    )
    return create_app(settings, engines={"main": engine})


async def test_pool_exhaustion_incident(db_url: str, small_engine: AsyncEngine) -> None:
    async with AsyncTestClient(pool_app(db_url, small_engine)) as c:
        held, line = await small_engine.connect(), here()
        await held.execute(text("SELECT 1"))
        held_pid = (await held.execute(text("SELECT pg_backend_pid()"))).scalar_one()

        async def checkout() -> str:
            try:
                async with small_engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                return "served"
            except sa_exc.TimeoutError:
                return "timed out"

        waiter = asyncio.create_task(checkout())

        async def waiting() -> bool:
            r = await c.get("/api/pool")
            return bool(r.json()["pools"][0]["waiting"] == 1)

        await wait_until_async(waiting, what="a second checkout waiting")
        inc = await wait_incident(c, "the pool incident", kind="pool_exhausted")
        assert inc["ended_at"] is None and inc["peak_blast_radius"] == 1
        assert inc["key"] == "shop/t-pool/main"
        assert inc["root_pid"] == held_pid
        origin = f"tests/test_incidents_pg.py:{line} in test_pool_exhaustion_incident"
        assert inc["root"]["origin"] == origin and inc["root"]["pool"] == "main"

        # the waiter times out: a freeze-frame, attached to the incident
        assert await waiter == "timed out"
        await held.close()
        done = await wait_incident(c, "the pool incident to end", kind="pool_exhausted", ended=True)
        assert done["id"] == inc["id"]
        detail = (await c.get(f"/api/incidents/{inc['id']}")).json()
        peak = detail["peak"]
        assert peak["timeouts"] == 1 and peak["pool"] == "main"
        assert [h["backend_pid"] for h in peak["holders"]] == [held_pid]
        assert peak["holders"][0]["origin"] == origin
        frame = peak["freeze_frame"]
        assert frame is not None and "QueuePool limit of size 1 overflow 0" in frame["error"]
        assert [h["backend_pid"] for h in frame["connections"]] == [held_pid]
        assert (
            "1 timed out" in done["summary"]
            and f"pid {held_pid} from {origin}" in (done["summary"])
        )
        page = await c.get(f"/incidents/{inc['id']}", headers=PAGE)
        assert page.status_code == 200 and 'id="incident-frame"' in page.text
        assert [t["data-pid"] for t in tags(page.text, "data-pid") if t["_tag"] == "tr"] == [
            str(held_pid)
        ]


# --- bad input ------------------------------------------------------------------------------
async def test_bad_input_is_refused(db_url: str) -> None:
    async with AsyncTestClient(app_for(db_url)) as c:
        for query, named in [
            ("?kind=deadlock", "kind="),
            ("?since=yesterday", "since="),
            ("?since=2026-13-40", "since="),
            ("?limit=0", "limit must be between 1 and 500"),
            ("?limit=501", "limit must be between 1 and 500"),
            ("?limit=ten", "limit="),
        ]:
            r = await c.get(f"/api/incidents{query}")
            assert r.status_code == 400, query
            assert named in r.json()["error"], (query, r.json())
        assert (await c.get("/api/incidents?kind=pool_exhausted&limit=500")).status_code == 200
        r = await c.get("/api/incidents/abc")
        assert r.status_code == 400 and "incident id" in r.json()["error"]
        r = await c.get("/api/incidents/424242")
        assert r.status_code == 404 and "no incident #424242" in r.json()["error"]
        page = await c.get("/incidents?range=1y", headers=PAGE)
        assert page.status_code == 400 and 'id="incidents-error"' in page.text
        assert "range=" in page.text
        page = await c.get("/incidents/424242", headers=PAGE)
        assert page.status_code == 404 and 'id="error-page"' in page.text


# --- the state database goes away -------------------------------------------------------------
async def test_state_database_down_then_back(
    pg_server_url: str, db_url: str, plain_db_url: str
) -> None:
    state_db = await create_database(pg_server_url)
    proxy = ThreadedPgProxy(pg_server_url)
    proxy.start()
    try:
        env = {"DASHBOARD_STATE_DATABASE_URL": proxy.url(state_db), **FAST}
        async with Pile(plain_db_url) as pile, AsyncTestClient(app_for(db_url, **env)) as c:
            assert await incidents(c) == []
            proxy.stop()
            r = await c.get("/api/incidents")
            assert r.status_code == 503 and "state database" in r.json()["error"]
            page = await c.get("/incidents", headers=PAGE)
            assert page.status_code == 503 and 'class="banner banner-error"' in page.text
            assert (await c.get("/incidents/1", headers=PAGE)).status_code == 503

            # detection goes on in memory: the Overview card shows it
            holder, _ = await start_pileup(pile, 3)
            root = holder.get_server_pid()

            async def in_memory() -> bool:
                await refresh(c)  # the sampler never fails because of the state database
                home = await c.get("/", headers=PAGE)
                return f"pid {root} (idle in transaction" in home.text

            await wait_until_async(in_memory, timeout_s=15, what="the open pile-up on the card")

            proxy.start()
            inc = await wait_incident(
                c,
                "the pile-up written once the state is back",
                kind="lock_pileup",
                root_pid=root,
                timeout_s=40,
            )
            assert inc["ended_at"] is None and inc["peak_blast_radius"] == 3
            await end_pileup(pile, holder)
            await wait_incident(
                c, "the pile-up to end", kind="lock_pileup", root_pid=root, ended=True
            )
    finally:
        proxy.close()
        await drop_database(pg_server_url, state_db)

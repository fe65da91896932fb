"""The incident detector and its views, without a database: observations are built from
real `Snapshot`s (assemble_snapshot) and pool readings, with an explicit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashboard.history.incident_queries import IncidentRecord
from dashboard.history.incident_view import (
    IncidentFilterError,
    card,
    parse_filters,
    parse_id,
    parse_range,
    record_json,
    timeline,
)
from dashboard.history.incidents import (
    ADOPTED_NOTE,
    IDLE_IN_TRANSACTION,
    LOCK_PILEUP,
    POOL_EXHAUSTED,
    FrameInfo,
    Holder,
    Incident,
    IncidentDetector,
    IncidentEvent,
    IncidentRoot,
    Observation,
    PoolReading,
    Thresholds,
    flatten_tree,
    prune_tree,
    summarize,
)
from dashboard.server.model import Privileges, ServerSettings, Session
from dashboard.server.snapshot import Snapshot, assemble_snapshot

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
STARTED = datetime(2026, 11, 30, 9, 0, 0, tzinfo=UTC)  # backend_start of every session


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def sess(
    pid: int,
    state: str = "active",
    *,
    app: str = "web",
    user: str = "alice",
    state_age: float | None = 1.0,
    xact_age: float | None = 1.0,
    query: str = "UPDATE accounts SET balance = balance - 1 WHERE id = 1",
    backend_start: datetime = STARTED,
    now: datetime = T0,
) -> Session:
    return Session(
        pid=pid,
        backend_start=backend_start,
        usename=user,
        application_name=app,
        client_addr="10.0.0.7",
        state=state,
        wait_event_type=None,
        wait_event=None,
        xact_start=None if xact_age is None else now - timedelta(seconds=xact_age),
        query_start=now,
        state_change=None if state_age is None else now - timedelta(seconds=state_age),
        query=query,
        backend_type="client backend",
        datname="app",
        xact_age_s=xact_age,
        query_age_s=0.0,
        state_age_s=state_age,
    )


def snap(sessions: list[Session], blocked_by: dict[int, list[int]] | None = None) -> Snapshot:
    return assemble_snapshot(
        sessions,
        blocked_by or {},
        ServerSettings(server_version_num=150000),
        Privileges(role="postgres", database="app", is_superuser=True),
        taken_at=0.0,
        server_now=T0,
    )


def pileup(root: int, waiters: int, **root_kw: object) -> Snapshot:
    """`root` idle in transaction, `waiters` sessions waiting on it directly."""
    sessions = [sess(root, "idle in transaction", **root_kw)]  # type: ignore[arg-type]
    blocked = {}
    for i in range(waiters):
        pid = root + 1 + i
        sessions.append(sess(pid, "active", app="worker"))
        blocked[pid] = [root]
    return snap(sessions, blocked)


def detector(**kw: float) -> IncidentDetector:
    t = Thresholds(
        min_blocked=int(kw.pop("min_blocked", 3)),
        min_s=kw.pop("min_s", 5.0),
        idle_in_transaction_s=kw.pop("idle_s", 60.0),
        pool_grace_s=kw.pop("grace_s", 5.0),
        heartbeat_s=kw.pop("heartbeat_s", 30.0),
    )
    assert not kw
    return IncidentDetector(t, service="shop", instance="web-1")


def observe(
    d: IncidentDetector, s: float, snapshot: Snapshot | None, *pools: PoolReading
) -> list[IncidentEvent]:
    return d.observe(Observation(at=at(s), snapshot=snapshot, pools=tuple(pools)))


def kinds(events: list[IncidentEvent]) -> list[tuple[str, str]]:
    return [(e.action, e.incident.kind) for e in events]


# --- lock pile-ups ----------------------------------------------------------------------
def test_pileup_below_threshold_is_nothing() -> None:
    d = detector()
    for s in range(0, 30, 2):
        assert observe(d, s, pileup(100, 2)) == []


def test_pileup_too_short_is_nothing() -> None:
    d = detector()
    assert observe(d, 0, pileup(100, 3)) == []
    assert observe(d, 2, pileup(100, 4)) == []
    assert observe(d, 4, pileup(100, 0)) == []  # over before min_s
    assert observe(d, 6, pileup(100, 3)) == []  # a new start: the clock starts again
    assert observe(d, 10, pileup(100, 3)) == []
    assert observe(d, 10.5, pileup(100, 2)) == []  # dipped below: pending reset
    assert observe(d, 12, pileup(100, 3)) == []
    assert observe(d, 16, pileup(100, 3)) == []


def test_pileup_sustained_opens_grows_and_closes() -> None:
    d = detector()
    assert observe(d, 0, pileup(100, 3)) == []
    assert observe(d, 3, pileup(100, 3)) == []
    [ev] = observe(d, 5, pileup(100, 3))
    assert ev.action == "open" and ev.incident.kind == LOCK_PILEUP
    inc = ev.incident
    assert inc.started_at == at(0)  # when it was first seen that large
    assert inc.key == f"100@{STARTED.isoformat()}"
    assert inc.peak_blast_radius == 3 and inc.peak_at == at(5)
    assert inc.root is not None and inc.root.pid == 100
    assert inc.root.state == "idle in transaction" and inc.root.application == "web"
    assert inc.root.user == "alice" and inc.root.client == "10.0.0.7"
    assert "UPDATE accounts" in (inc.root.query or "")
    tree = inc.peak["tree"]
    assert tree["pid"] == 100 and sorted(n["pid"] for n in tree["blocked"]) == [101, 102, 103]

    # the peak grows: an update with the bigger tree
    [ev] = observe(d, 7, pileup(100, 7))
    assert ev.action == "update"
    assert ev.incident.peak_blast_radius == 7 and ev.incident.peak_at == at(7)
    assert len(ev.incident.peak["tree"]["blocked"]) == 7
    # smaller again, still going: nothing to write (the peak stays)
    assert observe(d, 9, pileup(100, 1)) == []
    # the root blocks nobody any more: over
    [ev] = observe(d, 42, pileup(100, 0))
    assert ev.action == "close"
    assert ev.incident.ended_at == at(42)
    assert ev.incident.peak_blast_radius == 7
    assert ev.incident.summary == (
        "pid 100 (idle in transaction, app web) blocked 7 sessions for 42s"
    )
    assert d.open_incidents() == []


def test_pileup_same_pid_new_backend_is_a_new_incident() -> None:
    d = detector(min_s=0)
    [ev] = observe(d, 0, pileup(100, 3))
    assert ev.action == "open"
    later = STARTED + timedelta(hours=1)
    events = observe(d, 2, pileup(100, 3, backend_start=later))
    assert kinds(events) == [("close", LOCK_PILEUP), ("open", LOCK_PILEUP)]
    assert events[0].incident.key != events[1].incident.key


def test_pileup_counts_transitive_waiters_and_heartbeat() -> None:
    d = detector(min_s=0, heartbeat_s=10)
    sessions = [sess(1, "idle in transaction"), sess(2), sess(3), sess(4)]
    chain = snap(sessions, {2: [1], 3: [2], 4: [3]})  # 1 <- 2 <- 3 <- 4
    [ev] = observe(d, 0, chain)
    assert ev.incident.peak_blast_radius == 3 and ev.incident.root_pid == 1
    rows = flatten_tree(ev.incident.peak["tree"])
    assert [(r["pid"], r["depth"]) for r in rows] == [(1, 0), (2, 1), (3, 2), (4, 3)]
    assert observe(d, 5, chain) == []
    [hb] = observe(d, 11, chain)  # nothing changed, but updated_at is refreshed
    assert hb.action == "update" and hb.incident.updated_at == at(11)
    assert "so far" in hb.incident.summary


def test_pileup_ignores_a_blocker_with_too_few_waiters_among_others() -> None:
    d = detector(min_s=0)
    sessions = [sess(1, "idle in transaction"), sess(2), sess(5, "idle in transaction"), sess(6)]
    events = observe(d, 0, snap(sessions, {2: [1], 6: [5]}))
    assert events == []


# --- idle in transaction --------------------------------------------------------------------
def test_idle_in_transaction_opens_after_the_limit_and_ends_with_the_transaction() -> None:
    d = detector(idle_s=60)
    idle = sess(7, "idle in transaction", state_age=30, xact_age=31, app="billing")
    own = sess(8, "idle in transaction", state_age=500, xact_age=500, app="dashboard-state")
    assert observe(d, 0, snap([idle, own])) == []
    idle = sess(7, "idle in transaction", state_age=70, xact_age=71, app="billing", now=at(40))
    [ev] = observe(d, 40, snap([idle, own]))
    assert ev.action == "open" and ev.incident.kind == IDLE_IN_TRANSACTION
    assert ev.incident.started_at == at(40) - timedelta(seconds=70)
    assert ev.incident.root_pid == 7 and ev.incident.peak_blast_radius == 0
    assert ev.incident.summary == "pid 7 (app billing) is idle in transaction for 1m 10s so far"
    # it runs a statement in the same transaction: still the same incident
    busy = sess(7, "active", state_age=0.1, xact_age=75, app="billing", now=at(44))
    assert observe(d, 44, snap([busy, own])) == []
    # now it blocks two sessions: the peak
    idle = sess(7, "idle in transaction", state_age=5, xact_age=80, app="billing", now=at(49))
    [ev] = observe(d, 49, snap([idle, own, sess(9), sess(10)], {9: [7], 10: [7]}))
    assert ev.action == "update" and ev.incident.peak_blast_radius == 2
    # the transaction ends (idle, no transaction): closed
    done = sess(7, "idle", state_age=1, xact_age=None, app="billing")
    [ev] = observe(d, 60, snap([done, own]))
    assert ev.action == "close" and ev.incident.ended_at == at(60)
    assert ev.incident.summary == (
        "pid 7 (app billing) stayed idle in transaction for 1m 30s, blocking up to 2 sessions"
    )


def test_the_root_of_an_open_pileup_is_one_incident_not_two() -> None:
    """A root idle in transaction past the limit while its pile-up is open: the pile-up
    already names it; a separate idle-in-transaction incident only once the pile-up ends."""
    d = detector(idle_s=10, min_s=5)
    assert observe(d, 0, pileup(100, 3, state_age=1.0)) == []
    [ev] = observe(d, 5, pileup(100, 3, state_age=6.0))
    assert kinds([ev]) == [("open", LOCK_PILEUP)]
    assert observe(d, 12, pileup(100, 3, state_age=13.0, now=at(12))) == []
    # the waiters give up; the root stays idle in transaction: now it is its own incident
    events = observe(d, 14, pileup(100, 0, state_age=15.0, now=at(14)))
    assert sorted(kinds(events)) == [("close", LOCK_PILEUP), ("open", IDLE_IN_TRANSACTION)]


def test_idle_in_transaction_new_transaction_is_a_new_incident() -> None:
    d = detector(idle_s=10)
    [ev] = observe(d, 0, snap([sess(7, "idle in transaction", state_age=20, xact_age=20)]))
    assert ev.action == "open"
    # same session, another transaction (started later)
    later = sess(7, "idle in transaction", state_age=12, xact_age=12, now=at(30))
    events = observe(d, 30, snap([later]))
    assert kinds(events) == [("close", IDLE_IN_TRANSACTION), ("open", IDLE_IN_TRANSACTION)]


# --- pool exhaustion -------------------------------------------------------------------------
HOLDER = Holder(backend_pid=321, held_for_s=42.0, origin="app/orders.py:88 in checkout")


def pool(waiting: int, timeouts: int = 0, **kw: object) -> PoolReading:
    return PoolReading(
        name="main",
        waiting=waiting,
        timeouts_total=timeouts,
        checked_out=1,
        size=1,
        limit=1,
        longest_wait_s=kw.pop("longest_wait_s", 0.0),  # type: ignore[arg-type]
        holders=(HOLDER,),
        **kw,  # type: ignore[arg-type]
    )


def test_pool_exhaustion_opens_with_waiters_and_closes_after_grace() -> None:
    d = detector(grace_s=5)
    assert observe(d, 0, None, pool(0)) == []
    [ev] = observe(d, 2, None, pool(2, longest_wait_s=1.5))
    assert ev.action == "open" and ev.incident.kind == POOL_EXHAUSTED
    inc = ev.incident
    assert inc.key == "shop/web-1/main"
    assert inc.started_at == at(0.5)  # the oldest waiter's wait began then
    assert inc.peak_blast_radius == 2
    assert inc.root is not None and inc.root.pid == 321
    assert inc.root.origin == "app/orders.py:88 in checkout" and inc.root.pool == "main"
    assert inc.peak["holders"][0]["backend_pid"] == 321
    [ev] = observe(d, 4, None, pool(3, longest_wait_s=3.5))
    assert ev.action == "update" and ev.incident.peak_blast_radius == 3
    assert observe(d, 6, None, pool(0)) == []  # calm, within the grace period
    assert observe(d, 8, None, pool(1)) == []  # busy again: the grace starts over
    assert observe(d, 10, None, pool(0)) == []
    [ev] = observe(d, 15, None, pool(0))
    assert ev.action == "close"
    assert ev.incident.ended_at == at(10)  # the first calm cycle
    assert ev.incident.summary == (
        "pool main of shop/web-1 exhausted for 9s: up to 3 waiting; "
        "longest holder pid 321 from app/orders.py:88 in checkout, held 42s"
    )


def test_pool_timeouts_open_an_incident_and_keep_the_freeze_frame() -> None:
    d = detector(grace_s=2)
    assert observe(d, 0, None, pool(0, timeouts=4)) == []  # earlier timeouts: not ours
    frame = FrameInfo(
        id=9,
        at=at(1).timestamp(),
        error="QueuePool limit of size 1 overflow 0 reached",
        timeouts=1,
        waiting=2,
        checked_out=1,
        complete=False,
        holders=(HOLDER,),
    )
    [ev] = observe(d, 2, None, pool(0, timeouts=5, frame=frame))
    assert ev.action == "open"
    assert ev.incident.peak["timeouts"] == 1
    assert ev.incident.peak["freeze_frame"]["id"] == 9
    assert ev.incident.peak_blast_radius == 2  # the frame saw two waiters
    done = FrameInfo(**{**frame.__dict__, "complete": True, "blocked_count": 1})
    [ev] = observe(d, 3, None, pool(0, timeouts=5, frame=done))
    assert ev.action == "update" and ev.incident.peak["freeze_frame"]["complete"] is True
    [ev] = observe(d, 6, None, pool(0, timeouts=5, frame=done))
    assert ev.action == "close" and "1 timed out" in ev.incident.summary


# --- adoption ----------------------------------------------------------------------------
def adopted(kind: str, key: str, pid: int, db_id: int) -> Incident:
    return Incident(
        local_id=0,
        kind=kind,
        key=key,
        started_at=at(-100),
        updated_at=at(-60),
        root=IncidentRoot(pid=pid, state="idle in transaction", application="web"),
        peak_blast_radius=4,
        peak_at=at(-90),
        peak={},
        summary="",
        db_id=db_id,
    )


def test_adopted_incidents_continue_or_end_unseen() -> None:
    d = detector(min_s=5)
    key = f"100@{STARTED.isoformat()}"
    taken = d.adopt(
        [
            adopted(LOCK_PILEUP, key, 100, db_id=11),
            adopted(LOCK_PILEUP, "555@-", 555, db_id=12),
            adopted(POOL_EXHAUSTED, "shop/web-1/main", 321, db_id=13),
        ]
    )
    assert [i.db_id for i in taken] == [11, 12, 13]
    events = observe(d, 0, pileup(100, 2), pool(0))
    by_db = {e.incident.db_id: e for e in events}
    # still going (even below the threshold, it is the same pile-up): continued at once
    assert by_db[11].action == "update" and by_db[11].incident.ended_at is None
    assert by_db[11].incident.started_at == at(-100)
    # not seen: ended when last seen, with the note
    for gone in (12, 13):
        assert by_db[gone].action == "close"
        assert by_db[gone].incident.ended_at == at(-60)
        assert by_db[gone].incident.note == ADOPTED_NOTE
    assert by_db[12].incident.summary == (
        "pid 555 (idle in transaction, app web) blocked 4 sessions for at least 40s "
        f"({ADOPTED_NOTE})"
    )
    # and the continued one ends normally later
    [ev] = observe(d, 10, pileup(100, 0))
    assert ev.action == "close" and ev.incident.db_id == 11 and ev.incident.note is None


# --- pure helpers --------------------------------------------------------------------------
def test_prune_tree_bounds_the_stored_tree() -> None:
    big = pileup(1, 30)
    root = big.locks_json()["roots"][0]
    tree, dropped = prune_tree(root, {1: "app.py:3 in f"}, max_nodes=10)
    rows = flatten_tree(tree)
    assert len(rows) == 10 and dropped == 21
    assert rows[0]["origin"] == "app.py:3 in f" and rows[0]["depth"] == 0


def test_summary_of_an_unknown_root() -> None:
    inc = adopted(LOCK_PILEUP, "0@-", 0, 1)
    inc = Incident(**{**inc.__dict__, "root": None, "ended_at": at(0)})
    assert summarize(inc) == "an unknown session blocked 4 sessions for 1m 40s"


def record(i: int, kind: str, start: float, end: float | None) -> IncidentRecord:
    return IncidentRecord(
        id=i,
        kind=kind,
        key=str(i),
        service="shop",
        instance="web-1",
        started_at=at(start),
        ended_at=None if end is None else at(end),
        updated_at=at(end if end is not None else 0),
        root_pid=100 + i,
        root=IncidentRoot(pid=100 + i),
        peak_blast_radius=3,
        peak_at=at(start),
        peak={},
        summary=f"incident {i}",
    )


def test_timeline_lanes_and_open_bars() -> None:
    recs = [
        record(1, LOCK_PILEUP, -7200, -3600),
        record(2, POOL_EXHAUSTED, -5000, -100),  # overlaps 1: second lane
        record(3, IDLE_IN_TRANSACTION, -3000, None),  # 1 has ended: first lane again
        record(4, LOCK_PILEUP, -200_000, -190_000),  # outside 24 h
    ]
    tl = timeline(recs, at(0), 86_400)
    bars = {b.id: b for b in tl.bars}
    assert set(bars) == {1, 2, 3}
    assert (bars[1].lane, bars[2].lane, bars[3].lane) == (0, 1, 0)
    assert bars[3].open and not bars[1].open
    assert bars[1].x == pytest.approx((86_400 - 7200) / 86_400 * 100, abs=0.01)
    assert bars[3].x + bars[3].width == pytest.approx(100.0)
    assert tl.lanes == 2 and [t.label for t in tl.ticks][:2] == ["15:00", "18:00"]
    assert len(tl.ticks) == 7  # 15:00 … 09:00 (the window ends at 12:00)
    assert all(0 < t.x < 100 for t in tl.ticks)


def test_card_lists_open_first() -> None:
    recs = [record(3, LOCK_PILEUP, -30, None), record(2, LOCK_PILEUP, -300, -200)]
    c = card(recs, at(0))
    assert [i["id"] for i in c["open"]] == [3] and [i["id"] for i in c["recent"]] == [2]
    j = record_json(recs[0], at(0))
    assert j["ongoing"] is True and j["ended_at"] is None and j["duration_s"] == 30.0
    assert j["root_pid"] == 103


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"kind": "deadlock"}, "kind="),
        ({"since": "yesterday"}, "since="),
        ({"since": "0001-01-01T00:00:00+14:00"}, "since="),
        ({"limit": "many"}, "limit="),
        ({"limit": "501"}, "limit must be between 1 and 500"),
        ({"limit": "0"}, "limit must be between 1 and 500"),
    ],
)
def test_bad_filters_are_named(params: dict[str, str], named: str) -> None:
    with pytest.raises(IncidentFilterError) as err:
        parse_filters(params)
    assert named in str(err.value)


def test_good_filters() -> None:
    q = parse_filters({"kind": "lock_pileup", "since": "2026-11-30T10:00", "limit": "5"})
    assert q.kind == "lock_pileup" and q.limit == 5
    assert q.since == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    assert parse_filters({}).limit == 100
    assert parse_range(None) == "24h" and parse_range("7d") == "7d"
    with pytest.raises(IncidentFilterError, match="range="):
        parse_range("1y")
    with pytest.raises(IncidentFilterError, match="incident id"):
        parse_id("abc")
    with pytest.raises(IncidentFilterError, match="out of range"):
        parse_id("0")

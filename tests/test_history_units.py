"""History without a database: sample building, the minute roll-up, range validation,
resolution choice, downsampling windows, chart geometry and the rendered SVG."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import Environment, FileSystemLoader
from sqlalchemy.dialects import postgresql

from dashboard.history import sample_queries as q
from dashboard.history.charts import IncidentBand, nice_ceiling, render_chart, time_ticks
from dashboard.history.retention import RetentionPolicy, downsample_window
from dashboard.history.samples import (
    FULL,
    MINUTE,
    MinuteRollup,
    PoolCounters,
    SampleRow,
    activity_sample,
    build_rows,
    locks_sample,
    minute_of,
)
from dashboard.history.series import (
    SPECS,
    ChartPoint,
    HistoryQueryError,
    Piece,
    api_point,
    chart_pieces,
    chart_step_s,
    choose_resolution,
    parse_query,
    parse_time,
    row_pieces,
)
from dashboard.server.model import LockWait, Privileges, ServerSettings, Session
from dashboard.server.snapshot import Snapshot, assemble_snapshot

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 30, 12, 0, 30, tzinfo=UTC)


def session(pid: int, **kw: Any) -> Session:
    base: dict[str, Any] = {
        "pid": pid,
        "backend_start": NOW - timedelta(hours=1),
        "usename": "app",
        "application_name": "api",
        "client_addr": "10.0.0.5",
        "state": "idle",
        "wait_event_type": None,
        "wait_event": None,
        "xact_start": None,
        "query_start": NOW - timedelta(seconds=5),
        "state_change": NOW - timedelta(seconds=4),
        "query": "SELECT 1",
        "backend_type": "client backend",
        "datname": "prod",
    }
    wait_s = kw.pop("wait_s", None)
    base.update(kw)
    s = Session(**base)
    if wait_s is not None:
        s.wait = LockWait(
            "relation", "AccessShareLock", "public.t", 1, None, None, None, wait_s, False
        )
    return s


def pile_up_snapshot() -> Snapshot:
    """Root 10 (idle in transaction) blocks 11, which blocks 12 and 13; root 20 blocks 21."""
    root = session(10, state="idle in transaction", application_name="billing", query="UPDATE x")
    root.xact_age_s = 95.0
    sessions = [
        root,
        session(11, state="active", wait_s=30.0, query="ALTER TABLE t ADD c int"),
        session(12, state="active", wait_s=12.5),
        session(13, state="active", wait_s=3.0),
        session(20, state="idle in transaction", query="<insufficient privilege>"),
        session(21, state="active", wait_s=1.0),
        session(30, state="idle"),
        session(31, backend_type="autovacuum launcher", state=None),
    ]
    return assemble_snapshot(
        sessions,
        {11: [10], 12: [11], 13: [11], 21: [20]},
        ServerSettings(max_connections=100, superuser_reserved_connections=3),
        Privileges(role="dash", database="prod"),
        taken_at=NOW.timestamp(),
        server_now=NOW,
    )


def counters(name: str = "main", **kw: Any) -> PoolCounters:
    base: dict[str, Any] = {
        "name": name,
        "size": 5,
        "max_overflow": 10,
        "limit": 15,
        "checked_out": 4,
        "checked_in": 1,
        "overflow": 0,
        "waiting": 2,
        "longest_wait_s": 1.25,
        "timeouts_total": 3,
        "checkouts_total": 99,
        "peak_checked_out": 6,
        "peak_waiting": 1,
    }
    base.update(kw)
    return PoolCounters(**base)


# -- samples ---------------------------------------------------------------------------
def test_locks_sample_keeps_roots_by_blast_radius_and_the_longest_wait() -> None:
    ls = locks_sample(pile_up_snapshot())
    assert ls.blocked_count == 4 and ls.root_count == 2
    assert [r.pid for r in ls.roots] == [10, 20]
    assert [r.blast_radius for r in ls.roots] == [3, 1]
    assert ls.roots[0].application_name == "billing" and ls.roots[0].direct_waiters == 1
    assert ls.roots[0].query == "UPDATE x" and ls.roots[0].xact_age_s == 95.0
    assert ls.roots[1].query is None  # hidden from the dashboard's role: never the placeholder
    assert ls.longest_wait_s == 30.0
    data = ls.to_json()
    assert data["level"] == 4 and data["max_blast_radius"] == 3


def test_activity_sample_counts_client_sessions_by_state() -> None:
    a = activity_sample(pile_up_snapshot())
    assert a.total == 7  # the autovacuum launcher is not a client
    assert a.by_state == {"active": 4, "idle in transaction": 2, "idle": 1}
    assert a.active == 4 and a.idle_in_transaction == 2 and a.waiting_on_locks == 4
    assert a.max_connections == 100 and a.usable_connections == 97
    assert a.longest_xact_s == 95.0
    assert a.to_json()["level"] == 7


def test_build_rows_labels_every_series_and_totals_the_pools() -> None:
    snap = pile_up_snapshot()
    pools = [counters(), counters("reports", limit=None, checked_out=1, peak_checked_out=0)]
    rows = build_rows(snap, pools, service="api", instance="host-1:42")
    assert [r.series for r in rows] == ["pool", "locks", "activity"]
    assert all(r.at == NOW and r.resolution_s == FULL for r in rows)
    assert {(r.service, r.instance) for r in rows} == {("api", "host-1:42")}
    pool = rows[0].data
    assert pool["checked_out"] == 6 + 1  # the window peak counts when above the current value
    assert pool["waiting"] == 2 + 2
    assert pool["limit"] is None  # one pool has no limit: the total has none either
    assert pool["timeouts_total"] == 6 and pool["level"] == 11
    assert [p["name"] for p in pool["pools"]] == ["main", "reports"]
    # no observed pool: no pool row
    assert [r.series for r in build_rows(snap, None, service="a", instance="b")] == [
        "locks",
        "activity",
    ]
    point = api_point(rows[1])
    assert point["at"] == NOW.isoformat() and point["blocked_count"] == 4
    assert point["service"] == "api" and point["resolution_s"] == 0


def row_at(at: datetime, level: int, series: str = "locks") -> SampleRow:
    return SampleRow(at, series, "api", "h:1", FULL, {"level": level, "blocked_count": level})


def test_minute_rollup_keeps_the_worst_sample_of_each_minute() -> None:
    r = MinuteRollup()
    m0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert r.add(row_at(m0 + timedelta(seconds=2), 1)) == []
    assert r.add(row_at(m0 + timedelta(seconds=20), 5)) == []
    assert r.add(row_at(m0 + timedelta(seconds=40), 2)) == []
    assert r.add(row_at(m0 + timedelta(seconds=5), 9, "activity")) == []  # its own minute
    out = r.add(row_at(m0 + timedelta(seconds=62), 0))
    assert len(out) == 1
    minute = out[0]
    assert minute.at == m0 and minute.resolution_s == MINUTE and minute.series == "locks"
    assert minute.data["level"] == 5 and minute.data["samples"] == 3
    assert r.add(row_at(m0 + timedelta(seconds=30), 7)) == []  # late row of a closed minute
    rest = sorted(r.flush(), key=lambda x: x.series)
    assert [(x.series, x.at, x.data["samples"]) for x in rest] == [
        ("activity", m0, 1),
        ("locks", m0 + timedelta(minutes=1), 1),
    ]
    assert r.flush() == []


# -- validation ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({}, "series", "required"),
        ({"series": "disk"}, "series", "not one of pool, locks, activity"),
        ({"series": "locks", "since": "yesterday"}, "since", "not an ISO 8601 timestamp"),
        ({"series": "locks", "since": "2026-12-01T00:00:00Z"}, "since", "in the future"),
        ({"series": "locks", "range": "2h"}, "range", "not one of 15m, 1h, 6h, 24h, 7d"),
        ({"series": "locks", "until": "2026-11-30T13:00Z", "since": "2026-11-30T12:00Z"}, None, ""),
        (
            {"series": "locks", "since": "2026-11-30T11:00Z", "until": "2026-11-30T10:00Z"},
            "until",
            "later than since",
        ),
        ({"series": "pool", "limit": "many"}, "limit", "not a whole number"),
        ({"series": "pool", "limit": "0"}, "limit", "between 1 and"),
        ({"series": "pool", "service": "a\x00b"}, "service", "control character"),
        ({"series": "pool", "until": "0001-01-01T00:00:00"}, "until", "out of range"),
        ({"series": "pool", "since": "1969-12-31T23:59:59Z"}, "since", "out of range"),
        ({"series": "pool", "until": "9999-12-31T23:59:59-14:00"}, "until", "out of range"),
    ],
)
def test_parse_query_names_the_bad_parameter(
    params: dict[str, str], field: str | None, words: str
) -> None:
    if field is None:
        parse_query(params, now=NOW)
        return
    with pytest.raises(HistoryQueryError) as err:
        parse_query(params, now=NOW)
    assert err.value.field == field
    assert words in err.value.message
    assert field in err.value.message


def test_parse_query_windows() -> None:
    q1 = parse_query({"series": "locks"}, now=NOW)  # default: the last hour
    assert (q1.since, q1.until, q1.resolution_s) == (NOW - timedelta(hours=1), NOW, FULL)
    q2 = parse_query({"series": "pool", "range": "7d"}, now=NOW)
    assert q2.span == timedelta(days=7) and q2.resolution_s == MINUTE
    since = NOW - timedelta(hours=3)
    q3 = parse_query({"series": "activity", "since": since.isoformat(), "range": "15m"}, now=NOW)
    assert (q3.since, q3.until, q3.resolution_s) == (since, since + timedelta(minutes=15), FULL)
    # the + of an offset that arrived unencoded (a space) is restored; naive means UTC
    assert parse_time("since", "2026-11-30T10:00:00 02:00") == datetime(
        2026, 11, 30, 8, 0, tzinfo=UTC
    )
    assert parse_time("since", "2026-11-30T10:00") == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    assert q3.echo()["since"] == since.isoformat()


def test_resolution_follows_the_span_and_where_full_rows_are_kept() -> None:
    assert choose_resolution(NOW - timedelta(minutes=15), NOW, NOW) == FULL
    assert choose_resolution(NOW - timedelta(hours=1), NOW, NOW) == FULL
    assert choose_resolution(NOW - timedelta(hours=6), NOW, NOW) == MINUTE
    old = NOW - timedelta(days=3)
    assert choose_resolution(old, old + timedelta(minutes=15), NOW) == MINUTE  # downsampled
    assert chart_step_s(NOW - timedelta(minutes=15), NOW, FULL) == 3
    assert chart_step_s(NOW - timedelta(hours=24), NOW, MINUTE) == 360
    assert chart_step_s(NOW - timedelta(hours=6), NOW, MINUTE) == 90


def test_downsample_window_is_bounded_and_minute_aligned() -> None:
    policy = RetentionPolicy(retention=timedelta(days=14), chunk=timedelta(minutes=30))
    assert downsample_window(None, NOW, policy) is None
    assert downsample_window(NOW - timedelta(hours=23), NOW, policy) is None  # within a day
    oldest = NOW - timedelta(days=3, seconds=17)
    lo, hi = downsample_window(oldest, NOW, policy)  # type: ignore[misc]
    assert lo == minute_of(oldest) and hi - lo == timedelta(minutes=30)
    nearly = NOW - timedelta(hours=24, minutes=5)
    lo, hi = downsample_window(nearly, NOW, policy)  # type: ignore[misc]
    assert hi == minute_of(NOW - timedelta(hours=24))  # never into the last day
    assert lo.second == hi.second == 0


def test_chart_pieces_prefer_service_rows_over_hours() -> None:
    since = NOW - timedelta(hours=24)
    assert chart_pieces(
        NOW - timedelta(hours=1), NOW, NOW, FULL, instance=None, last_service_minute=None
    ) == [Piece(FULL, NOW - timedelta(hours=1), NOW)]
    last = minute_of(NOW) - timedelta(minutes=2)
    pieces = chart_pieces(since, NOW, NOW, MINUTE, instance=None, last_service_minute=last)
    assert pieces == [
        Piece(MINUTE, since, last + timedelta(minutes=1), whole_service=True),
        Piece(FULL, last + timedelta(minutes=1), NOW),
    ]
    # no service rows yet, or one instance: the instances' minute rows and the recent full rows
    for kw in (
        {"instance": None, "last_service_minute": None},
        {"instance": "h:1", "last_service_minute": last},
    ):
        assert chart_pieces(since, NOW, NOW, MINUTE, **kw) == [  # type: ignore[arg-type]
            Piece(MINUTE, since, NOW),
            Piece(FULL, NOW - timedelta(minutes=2), NOW),
        ]
    q7 = parse_query({"series": "locks", "range": "7d"}, now=NOW)
    assert row_pieces(q7, NOW)[-1] == Piece(FULL, NOW - timedelta(minutes=2), NOW)


def test_queries_bind_every_value() -> None:
    since = NOW - timedelta(hours=24)
    pieces = [
        Piece(MINUTE, since, NOW - timedelta(minutes=2), whole_service=True),
        Piece(FULL, NOW - timedelta(minutes=2), NOW),
    ]
    stmt = q.chart_buckets(SPECS["pool"], pieces, step_s=360, service="api'; DROP TABLE x; --")
    sql = str(stmt.compile(dialect=postgresql.dialect()))
    assert "DROP TABLE" not in sql and "checked_out" not in sql  # keys and labels are bound
    assert "UNION ALL" in sql  # service rows plus the most recent full rows
    rollup = str(
        q.rollup_minutes("locks", NOW - timedelta(days=2), NOW).compile(
            dialect=postgresql.dialect()
        )
    )
    assert "DISTINCT ON" in rollup and "NOT (EXISTS" in rollup
    service = str(q.rollup_service(SPECS["pool"], since, NOW).compile(dialect=postgresql.dialect()))
    assert "sum(" in service and "jsonb_build_object" in service


# -- charts ----------------------------------------------------------------------------
def chart_fixture() -> tuple[Any, list[ChartPoint], list[IncidentBand]]:
    spec = SPECS["locks"]
    since = NOW - timedelta(hours=1)
    step = chart_step_s(since, NOW, FULL)  # 15 s
    pts = []
    for k in range(240):
        if 100 <= k < 140:  # a hole in the history: the line breaks
            continue
        at = since + timedelta(seconds=k * step)
        pts.append(ChartPoint(at, (float(k % 7), float(k % 5))))
    bands = [
        IncidentBand(
            1,
            "lock_pileup",
            since + timedelta(minutes=10),
            since + timedelta(minutes=14),
            "5 waiting behind pid 42",
        ),
        IncidentBand(2, "pool_exhausted", NOW - timedelta(minutes=3), None, "pool main: 3 waiting"),
        IncidentBand(
            3, "lock_pileup", since - timedelta(hours=5), since - timedelta(hours=4), "long gone"
        ),
    ]
    return spec, pts, bands


def test_chart_geometry_has_bands_ticks_units_and_gaps() -> None:
    spec, pts, bands = chart_fixture()
    since = NOW - timedelta(hours=1)
    c = render_chart(
        spec,
        pts,
        bands,
        since=since,
        until=NOW,
        now=NOW,
        step_s=15,
        expected_interval_s=2.0,
        range_label="1h",
    )
    assert [b.id for b in c.bands] == [1, 2]  # the one before the range is not drawn
    b1, b2 = c.bands
    assert "hist-band-primary" in b1.cls and "hist-band-other" in b2.cls
    assert b2.open and "hist-band-open" in b2.cls
    assert float(b2.x) + float(b2.width) == pytest.approx(c.plot_right, abs=0.2)  # until now
    assert "5 waiting behind pid 42" in b1.title
    assert [t.label for t in c.x_ticks] == ["11:15", "11:30", "11:45", "12:00"]
    assert (
        c.unit == "sessions" and c.y_max == 10 and [t.label for t in c.y_ticks] == ["0", "5", "10"]
    )
    # the hole splits the area and both lines in two
    assert len([s for s in c.areas if "hist-m0" in s.cls]) == 2
    assert len([s for s in c.lines if "hist-m1" in s.cls]) == 2
    assert not c.empty and "incident" in c.label


def test_chart_reference_line_only_when_the_data_reaches_it() -> None:
    spec = SPECS["activity"]
    since = NOW - timedelta(minutes=15)
    low = [ChartPoint(since + timedelta(seconds=3 * k), (8.0, 2.0, 1.0, 97.0)) for k in range(300)]
    c = render_chart(
        spec, low, [], since=since, until=NOW, now=NOW, step_s=3, expected_interval_s=2
    )
    assert c.refs == () and c.y_max == 10
    assert any(k.note == "97, off scale" for k in c.legend)
    high = [ChartPoint(p.at, (90.0, 80.0, 5.0, 97.0)) for p in low]
    c2 = render_chart(
        spec, high, [], since=since, until=NOW, now=NOW, step_s=3, expected_interval_s=2
    )
    assert len(c2.refs) == 1 and c2.y_max == 100
    empty = render_chart(
        spec, [], [], since=since, until=NOW, now=NOW, step_s=3, expected_interval_s=2
    )
    assert empty.empty and empty.lines == ()


def test_time_ticks_and_scale() -> None:
    week = time_ticks(NOW - timedelta(days=7), NOW)
    assert len(week) == 7 and all(re.fullmatch(r"[A-Z][a-z]{2} \d\d", label) for _, label in week)
    day = time_ticks(NOW - timedelta(hours=24), NOW)
    assert [label for _, label in day][:2] == ["16:00", "20:00"]
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 11, 240)] == [1, 1, 5, 10, 20, 250]


def test_rendered_svg_has_markers_and_axis_labels() -> None:
    spec, pts, bands = chart_fixture()
    since = NOW - timedelta(hours=1)
    chart = render_chart(
        spec, pts, bands, since=since, until=NOW, now=NOW, step_s=15, expected_interval_s=2.0
    )
    env = Environment(loader=FileSystemLoader(ROOT / "templates"), autoescape=True)
    html = env.get_template("history/_chart.html").render(
        base="/ops",
        series="locks",
        spec=spec,
        range_name="1h",
        ranges=[
            {"name": r, "query": f"series=locks&range={r}", "active": r == "1h"}
            for r in ("15m", "1h", "6h", "24h", "7d")
        ],
        self_query="series=locks&range=1h",
        poll_s=10,
        service="api",
        instance=None,
        chart=chart,
        unavailable=None,
        gap=None,
        resolution="every sample",
        bands=bands[:2],
    )
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert len(re.findall(r'<rect [^>]*class="hist-band', svg)) == 2
    assert 'data-incident-id="2"' in svg and "still open" in svg
    for label in ("11:15", "11:30", "11:45", "12:00", ">sessions<", ">10<"):
        assert label in svg
    assert 'style="' not in html  # the CSP forbids inline styles
    assert 'hx-get="/ops/history/chart?series=locks&amp;range=24h"' in html
    assert len(re.findall(r'class="hist-range( hist-range-active)?"', html)) == 5
    assert html.count("hist-range-active") == 1
    banner = env.get_template("history/_chart.html").render(
        base="",
        series="pool",
        spec=SPECS["pool"],
        range_name="1h",
        ranges=[],
        self_query="",
        poll_s=10,
        service="api",
        instance=None,
        chart=None,
        gap=None,
        unavailable="connection refused",
    )
    assert "history unavailable: connection refused" in banner and "<svg" not in banner


HOSTILE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "\x00",
            "\ud800",
            "1e309",
            "NaN",
            "9" * 30,
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "2026-11-30T12:00:00 14:00",
            "7d",
            "pool",
            "+1",
        ]
    ),
)


@given(
    st.dictionaries(
        st.sampled_from(["series", "since", "until", "range", "limit", "service", "instance"]),
        HOSTILE,
    )
)
@settings(max_examples=400, deadline=None)
def test_parse_query_answers_anything_with_a_query_or_a_named_error(
    params: dict[str, str],
) -> None:
    try:
        query = parse_query({"series": "locks", **params}, now=NOW)
    except HistoryQueryError as exc:
        assert exc.field in ("series", "since", "until", "range", "limit", "service", "instance")
        assert exc.field in exc.message
    else:
        assert query.since < query.until and 1 <= query.limit <= 10_000

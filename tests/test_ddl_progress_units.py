"""Live DDL progress without a database: which counter each phase shows, the ETA from
the rate within one phase, resets on phase change, and unknown or zero totals."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from litestar.plugins.jinja import JinjaTemplateEngine

from dashboard.runs.ddl_progress import (
    CLUSTER_VIEW,
    CREATE_INDEX_VIEW,
    DdlProgress,
    DdlSample,
    DdlTracker,
    pick,
    progress_fields,
)
from dashboard.web.templating import configure_templates

ROOT = Path(__file__).resolve().parent.parent

INDEX = DdlSample(
    view=CREATE_INDEX_VIEW,
    command="CREATE INDEX CONCURRENTLY",
    phase="building index: scanning table",
    relation="orders",
    index="ix_orders_x",
    lockers_total=0,
    lockers_done=0,
    current_locker_pid=0,
    blocks_total=5000,
    blocks_done=1234,
    tuples_total=0,
    tuples_done=0,
    partitions_total=0,
    partitions_done=0,
)
CLUSTER = DdlSample(
    view=CLUSTER_VIEW,
    command="VACUUM FULL",
    phase="seq scanning heap",
    relation="orders",
    heap_tuples_scanned=100,
    heap_tuples_written=90,
    heap_blks_total=400,
    heap_blks_scanned=100,
    index_rebuild_count=0,
    rel_tuples=1000.0,
    index_count=3,
)


def at_phase(sample: DdlSample, phase: str, **counters: int | None) -> DdlSample:
    return replace(sample, phase=phase, **counters)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("phase", "counters", "unit", "done", "total"),
    [
        ("building index: scanning table", {}, "blocks", 1234, 5000),
        ("building index: scanning heap", {}, "blocks", 1234, 5000),
        (
            "building index: sorting live tuples",
            {"tuples_total": 800, "tuples_done": 0},
            "tuples",
            0,
            800,
        ),
        (
            "building index: loading tuples in tree",
            {"tuples_total": 800, "tuples_done": 200},
            "tuples",
            200,
            800,
        ),
        (
            "waiting for writers before build",
            {"lockers_total": 3, "lockers_done": 1},
            "lockers",
            1,
            3,
        ),
        ("waiting for old snapshots", {"lockers_total": 2, "lockers_done": 0}, "lockers", 0, 2),
        (
            "waiting for readers before dropping",
            {"lockers_total": 1, "lockers_done": 1},
            "lockers",
            1,
            1,
        ),
        (
            "index validation: scanning index",
            {"blocks_total": 50, "blocks_done": 5},
            "blocks",
            5,
            50,
        ),
        ("index validation: scanning table", {}, "blocks", 1234, 5000),
        ("index validation: sorting tuples", {}, None, None, None),
        ("initializing", {}, None, None, None),
        # an access method without sub-phase names: whichever counter it fills
        (
            "building index",
            {"blocks_total": 0, "tuples_total": 70, "tuples_done": 7},
            "tuples",
            7,
            70,
        ),
        ("building index", {}, "blocks", 1234, 5000),
    ],
)
def test_create_index_phase_picks_its_counter(
    phase: str, counters: dict[str, int], unit: str | None, done: int | None, total: int | None
) -> None:
    p = pick(at_phase(INDEX, phase, **counters))
    assert (p.unit, p.done, p.total) == (unit, done, total)
    assert p.phase == phase and p.eta_s is None
    assert (p.command, p.relation, p.index) == (
        "CREATE INDEX CONCURRENTLY",
        "orders",
        "ix_orders_x",
    )


def test_partitioned_index_counts_partitions_through_every_phase() -> None:
    for phase in ("building index: scanning table", "waiting for writers before build"):
        p = pick(at_phase(INDEX, phase, partitions_total=8, partitions_done=3))
        assert (p.unit, p.done, p.total, p.percent) == ("partitions", 3, 8, 37.5)


def test_lockers_phase_names_the_waited_for_pid() -> None:
    waiting = at_phase(
        INDEX, "waiting for old snapshots", lockers_total=2, lockers_done=1, current_locker_pid=4242
    )
    assert pick(waiting).current_locker_pid == 4242
    assert pick(replace(waiting, current_locker_pid=0)).current_locker_pid is None
    assert pick(replace(INDEX, current_locker_pid=4242)).current_locker_pid is None


@pytest.mark.parametrize(
    ("phase", "unit", "done", "total"),
    [
        ("seq scanning heap", "blocks", 100, 400),
        ("index scanning heap", "tuples", 100, 1000),  # total: the planner's estimate
        ("writing new heap", "tuples", 90, 100),
        ("rebuilding index", "indexes", 0, 3),
        ("sorting tuples", None, None, None),
        ("swapping relation files", None, None, None),
        ("performing final cleanup", None, None, None),
    ],
)
def test_cluster_phase_picks_its_counter(
    phase: str, unit: str | None, done: int | None, total: int | None
) -> None:
    p = pick(at_phase(CLUSTER, phase))
    assert (p.unit, p.done, p.total) == (unit, done, total)
    assert p.command == "VACUUM FULL"


def test_percent_is_rounded_and_clamped() -> None:
    assert pick(INDEX).percent == 24.7
    over = pick(at_phase(CLUSTER, "index scanning heap", heap_tuples_scanned=1500))
    assert over.percent == 100.0 and over.done == 1500


@pytest.mark.parametrize("total", [0, None])
def test_zero_or_unknown_total(total: int | None) -> None:
    sample = replace(INDEX, blocks_total=total, blocks_done=10)
    p = pick(sample)
    assert (p.unit, p.done, p.total, p.percent) == ("blocks", 10, None, None)
    tracker = DdlTracker()
    tracker.observe(sample, 0.0)
    assert tracker.observe(replace(sample, blocks_done=20), 1.0).eta_s is None  # type: ignore[union-attr]


def test_unknown_estimate_leaves_index_scan_without_total() -> None:
    p = pick(replace(CLUSTER, phase="index scanning heap", rel_tuples=-1.0))
    assert (p.unit, p.done, p.total, p.percent) == ("tuples", 100, None, None)


def scanned(done: int, phase: str = "building index: scanning table") -> DdlSample:
    return replace(INDEX, phase=phase, blocks_done=done, blocks_total=1000)


def eta(tracker: DdlTracker, sample: DdlSample | None, at: float) -> float | None:
    p = tracker.observe(sample, at)
    return p.eta_s if p else None


def test_eta_from_the_rate_within_a_phase() -> None:
    tracker = DdlTracker()
    assert eta(tracker, scanned(100), 10.0) is None  # one sample: no rate yet
    assert eta(tracker, scanned(200), 11.0) == 8.0  # 100 blocks/s, 800 left
    assert eta(tracker, scanned(400), 12.0) == 4.0  # (400-100)/2 s = 150/s, 600 left
    assert eta(tracker, scanned(1000), 13.0) == 0.0


def test_no_eta_without_progress_and_never_negative() -> None:
    tracker = DdlTracker()
    assert eta(tracker, scanned(100), 0.0) is None
    assert eta(tracker, scanned(100), 1.0) is None  # stood still
    assert eta(tracker, scanned(1200), 2.0) == 0.0  # past the total: not negative


def test_phase_change_resets_the_history() -> None:
    tracker = DdlTracker()
    eta(tracker, scanned(100), 0.0)
    assert eta(tracker, scanned(200), 1.0) is not None
    sorting = replace(INDEX, phase="building index: loading tuples in tree", tuples_total=500)
    assert eta(tracker, replace(sorting, tuples_done=100), 2.0) is None
    assert eta(tracker, replace(sorting, tuples_done=300), 3.0) == 1.0  # 200/s, 200 left


def test_none_sample_and_counter_going_back_reset() -> None:
    tracker = DdlTracker()
    eta(tracker, scanned(100), 0.0)
    eta(tracker, scanned(200), 1.0)
    assert tracker.observe(None, 2.0) is None
    assert eta(tracker, scanned(300), 3.0) is None  # history gone
    assert eta(tracker, scanned(50), 4.0) is None  # went back: a new build of the same name
    assert eta(tracker, scanned(150), 5.0) == 8.5


def test_another_index_is_another_history() -> None:
    tracker = DdlTracker()
    eta(tracker, scanned(100), 0.0)
    assert eta(tracker, replace(scanned(300), index="ix_other"), 1.0) is None


def test_rate_uses_a_sliding_window() -> None:
    tracker = DdlTracker(window_s=2.0)
    eta(tracker, scanned(0), 0.0)
    eta(tracker, scanned(10), 1.0)  # slow start: 10 blocks/s
    eta(tracker, scanned(20), 2.0)
    eta(tracker, scanned(220), 3.0)  # now 200 blocks/s
    # the window keeps samples from 2.0 s on: (420-20)/(4-2) = 200/s, 580 left
    assert eta(tracker, scanned(420), 4.0) == 2.9


def test_partition_count_survives_per_partition_phase_changes() -> None:
    tracker = DdlTracker()
    part = replace(INDEX, partitions_total=10)
    eta(tracker, replace(part, partitions_done=2), 0.0)
    later = replace(part, phase="building index: loading tuples in tree", partitions_done=4)
    assert eta(tracker, later, 2.0) == 6.0  # 1 partition/s, 6 left


def test_json_shape_and_top_level_fields() -> None:
    tracker = DdlTracker()
    tracker.observe(scanned(100), 0.0)
    p = tracker.observe(scanned(200), 1.0)
    assert isinstance(p, DdlProgress)
    doc = p.to_json()
    assert {
        "command",
        "phase",
        "done",
        "total",
        "unit",
        "percent",
        "eta_s",
        "relation",
        "index",
    } <= set(doc)
    assert doc["done"] == 200 and doc["total"] == 1000 and doc["unit"] == "blocks"
    fields = progress_fields(p)
    assert fields["ddl"] == doc
    assert fields["phase"] == "building index: scanning table" and fields["eta_s"] == 8.0
    assert progress_fields(None) == {"ddl": None, "phase": None, "eta_s": None}


# -- the run page's partial ---------------------------------------------------------------


def render(run: dict[str, object]) -> str:
    engine = JinjaTemplateEngine(directory=ROOT / "templates")
    configure_templates(engine)
    return engine.engine.get_template("runs/_ddl_progress.html").render(run=run)


def test_partial_shows_command_phase_count_and_eta() -> None:
    tracker = DdlTracker()
    tracker.observe(replace(INDEX, blocks_done=234), 0.0)
    p = tracker.observe(INDEX, 10.0)
    assert p is not None and p.eta_s == 37.7
    html = render({"status": "running", "progress": {"done": 0, **progress_fields(p)}})
    text = " ".join(re.sub(r"<[^>]+>", "", html).split())
    assert text.startswith("CREATE INDEX CONCURRENTLY ix_orders_x on orders — building index:")
    assert "1,234 of 5,000 blocks (25%) — about 37s left" in text
    assert 'id="run-ddl"' in html and 'data-phase="building index: scanning table"' in html
    assert '<progress class="runs-progress runs-ddl-progress" max="5000" value="1234">' in html


def test_partial_without_counter_or_eta_is_indeterminate() -> None:
    p = pick(replace(INDEX, phase="index validation: sorting tuples", index=None))
    html = render({"status": "running", "progress": progress_fields(p)})
    text = " ".join(re.sub(r"<[^>]+>", "", html).split())
    assert text == "CREATE INDEX CONCURRENTLY on orders — index validation: sorting tuples"
    assert "<progress" in html and "max=" not in html


def test_partial_names_the_session_a_concurrent_build_waits_for() -> None:
    waiting = replace(
        INDEX,
        phase="waiting for old snapshots",
        lockers_total=2,
        lockers_done=1,
        current_locker_pid=77,
    )
    html = render({"status": "running", "progress": progress_fields(pick(waiting))})
    assert "1 of 2 lockers (50%)" in html and "waiting for pid 77" in html


@pytest.mark.parametrize(
    "run",
    [
        {"status": "running", "progress": {"done": 0, "total": 1, "ddl": None}},
        {"status": "running", "progress": {"done": 0, "total": 1}},
        {"status": "running", "progress": None},
        {"status": "queued"},
        {"status": "interrupted", "progress": progress_fields(pick(INDEX))},  # not live any more
    ],
)
def test_partial_renders_nothing_without_live_ddl(run: dict[str, object]) -> None:
    assert render(run).strip() == ""

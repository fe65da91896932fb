"""Who applied each revision (`runs.applied_by`) and which downgrades cannot run
(`MigrationStatus.downgrade_blocked` / `downgrade_stops`): pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from dashboard.migrations.status import MigrationStatus, RevisionInfo
from dashboard.runs.applied_by import (
    BY_RUN,
    OUTSIDE,
    OUTSIDE_AFTER_UNDO,
    RevisionEvent,
    attribute,
    utc_minute,
)

AT = datetime(2026, 11, 30, 4, 12, 31, tzinfo=UTC)


def event(
    rev: str,
    run_id: int,
    *,
    at: datetime = AT,
    direction: str = "upgrade",
    status: str = "succeeded",
    by: str = "alice",
    approver: str | None = "bob",
) -> RevisionEvent:
    return RevisionEvent(rev, at, run_id, direction, status, by, approver)


def test_a_revision_a_run_applied_says_when_by_whom_and_which_run() -> None:
    found = attribute(["r2", "r1"], [event("r2", 12)])
    assert found["r2"].kind == BY_RUN
    assert found["r2"].text == "applied 2026-11-30 04:12 UTC by alice (approved by bob), run 12"
    assert found["r2"].when == "2026-11-30 04:12 UTC"
    assert found["r1"].kind == OUTSIDE
    assert found["r1"].text == "applied outside the dashboard"
    assert found["r1"].when == ""


def test_no_approver_and_a_run_that_failed_after_applying() -> None:
    found = attribute(["r1"], [event("r1", 3, approver=None, status="failed")])
    assert found["r1"].text == "applied 2026-11-30 04:12 UTC by alice, run 3, which then failed"


def test_the_newest_event_wins_and_a_later_undo_means_applied_again_outside() -> None:
    older = event("r1", 1)
    undo = event("r1", 2, at=AT + timedelta(hours=1), direction="downgrade", by="carol")
    assert attribute(["r1"], [older, undo])["r1"].kind == OUTSIDE_AFTER_UNDO
    assert attribute(["r1"], [undo, older])["r1"].kind == OUTSIDE_AFTER_UNDO
    text = attribute(["r1"], [undo])["r1"].text
    assert text == (
        "applied outside the dashboard (run 2 undid it 2026-11-30 05:12 UTC; "
        "it was applied again since)"
    )
    again = event("r1", 3, at=AT + timedelta(hours=2), by="dave", approver="erin")
    found = attribute(["r1"], [older, undo, again])["r1"]
    assert found.kind == BY_RUN and found.event is not None and found.event.run_id == 3
    # only revisions applied now are described
    assert set(attribute(["r1"], [event("gone", 9)])) == {"r1"}


def test_json_names_people_only_for_a_run_that_applied() -> None:
    data = attribute(["a", "b"], [event("a", 4)])
    assert data["a"].to_json() == {
        "revision": "a",
        "kind": "run",
        "text": "applied 2026-11-30 04:12 UTC by alice (approved by bob), run 4",
        "run_id": 4,
        "at": AT.isoformat(),
        "requested_by": "alice",
        "approved_by": "bob",
        "run_status": "succeeded",
    }
    assert data["b"].to_json()["kind"] == "outside" and data["b"].to_json()["run_id"] is None


def test_times_are_shown_in_utc() -> None:
    paris = datetime(2026, 11, 30, 5, 12, tzinfo=timezone(timedelta(hours=1)))
    assert utc_minute(paris) == "2026-11-30 04:12 UTC"
    assert utc_minute(datetime(2026, 11, 30, 4, 12)) == "2026-11-30 04:12 UTC"


def info(
    rev: str,
    down: str | list[str] | None,
    reason: str | None = None,
    *,
    depends: list[str] | None = None,
) -> RevisionInfo:
    return RevisionInfo(
        revision=rev,
        down_revision=down,
        message=f"rev {rev}",
        date=None,
        branch_labels=[],
        dependencies=depends or [],
        is_merge_point=isinstance(down, list),
        is_branch_point=False,
        is_head=False,
        irreversible=reason is not None,
        irreversible_reason=reason,
        file=f"{rev}.py",
    )


def status(current: list[str], applied: list[RevisionInfo]) -> MigrationStatus:
    return MigrationStatus(
        state="up_to_date", explanation="", current=current, heads=current, applied=applied
    )


def test_downgrade_blocked_names_the_current_revision_and_why() -> None:
    raises = "downgrade() raises NotImplementedError"
    s = status(["c"], [info("c", "b", raises), info("b", "a"), info("a", None)])
    assert s.downgrade_blocked == (
        "the current revision c cannot be downgraded: its downgrade() raises NotImplementedError"
    )
    assert s.to_json()["downgrade_blocked"] == s.downgrade_blocked
    empty = status(["c"], [info("c", "b", "downgrade() does nothing"), info("b", None)])
    assert empty.downgrade_blocked == (
        "the current revision c cannot be downgraded: its downgrade() does nothing"
    )
    missing = status(["c"], [info("c", None, "no downgrade() function")])
    assert missing.downgrade_blocked == (
        "the current revision c cannot be downgraded: it has no downgrade() function"
    )
    unreadable = status(["c"], [info("c", None, "cannot read file: gone")])
    assert unreadable.downgrade_blocked == (
        "the current revision c cannot be downgraded: cannot read file: gone"
    )
    # reversible current revision, several heads or nothing applied: not blocked here
    assert status(["b"], [info("b", "a"), info("a", None, raises)]).downgrade_blocked is None
    two = status(["x", "y"], [info("x", None, raises), info("y", None)])
    assert two.downgrade_blocked is None
    assert status([], []).downgrade_blocked is None


def test_downgrade_stops_below_an_irreversible_revision_only() -> None:
    raises = "downgrade() raises NotImplementedError"
    # d (current) -> c (irreversible) -> b -> a
    s = status(["d"], [info("d", "c"), info("c", "b", raises), info("b", "a"), info("a", None)])
    assert s.downgrade_stops == {"b": "c", "a": "c", "base": "c"}
    assert s.to_json()["downgrade_stops"] == {"b": "c", "a": "c", "base": "c"}
    # two branches merged in m; the irreversible one only blocks what it is built on
    branches = status(
        ["m"],
        [
            info("m", ["x2", "y1"]),
            info("x2", "x1", raises),
            info("y1", "root"),
            info("x1", "root"),
            info("root", None),
        ],
    )
    assert branches.downgrade_stops == {"x1": "x2", "root": "x2", "base": "x2"}
    # depends_on counts as built on: b2 depends on a1, so reaching below a1 undoes b2
    dep = status(
        ["b2", "a1"],
        [info("b2", "b1", raises, depends=["a1"]), info("b1", None), info("a1", None)],
    )
    assert dep.downgrade_stops == {"b1": "b2", "a1": "b2", "base": "b2"}
    # the newest irreversible revision in the way is named
    two = status(["c"], [info("c", "b", raises), info("b", "a", raises), info("a", None)])
    assert two.downgrade_stops == {"b": "c", "a": "c", "base": "c"}
    assert status(["b"], [info("b", "a"), info("a", None)]).downgrade_stops == {}

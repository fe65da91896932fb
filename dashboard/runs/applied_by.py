"""Who applied each applied revision, and when: the dashboard's runs joined with the
revisions the version table holds now (pure; the read is `RunRepo.revision_events`).

A run logs one `revision_applied` line per revision it moves (each in its own
transaction: `transaction_per_migration`), with the time it did. The newest such line for
a revision says what the dashboard last did to it:

- an upgrade: that run applied it, at that time, requested (and approved) by whom;
- a downgrade: the dashboard undid it since, yet it is applied now, so someone applied it
  again outside the dashboard;
- none: no run of this dashboard ever applied it: it was applied outside the dashboard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

BY_RUN = "run"
OUTSIDE = "outside"  # no dashboard run applied it
OUTSIDE_AFTER_UNDO = "outside_after_undo"  # a dashboard run undid it; applied again since


@dataclass(frozen=True)
class RevisionEvent:
    """The newest `revision_applied` line of one revision in this target's runs."""

    revision: str
    at: datetime
    run_id: int
    direction: str  # the run's: upgrade or downgrade
    run_status: str  # the run's status now (a failed run may have applied some revisions)
    requested_by: str
    approved_by: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RevisionEvent:
        return cls(
            revision=row["revision"],
            at=row["at"],
            run_id=int(row["run_id"]),
            direction=row["direction"],
            run_status=row["status"],
            requested_by=row["requested_by"],
            approved_by=row["approved_by"],
        )


def utc_minute(at: datetime) -> str:
    """`2026-11-30 04:12 UTC` (a naive datetime is taken as UTC)."""
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class AppliedBy:
    """How one applied revision came to be applied, as far as the dashboard knows."""

    revision: str
    kind: str  # BY_RUN, OUTSIDE or OUTSIDE_AFTER_UNDO
    event: RevisionEvent | None = None  # the run's line (BY_RUN, OUTSIDE_AFTER_UNDO)

    @property
    def when(self) -> str:
        """The time of the run's line, `2026-11-30 04:12 UTC` ("" without one)."""
        return utc_minute(self.event.at) if self.event is not None else ""

    @property
    def text(self) -> str:
        """One line for people, e.g. `applied 2026-11-30 04:12 UTC by alice (approved by
        bob), run 12`."""
        e = self.event
        if self.kind == BY_RUN and e is not None:
            approved = f" (approved by {e.approved_by})" if e.approved_by else ""
            ended = "" if e.run_status == "succeeded" else f", which then {e.run_status}"
            return (
                f"applied {utc_minute(e.at)} by {e.requested_by}{approved}, run {e.run_id}{ended}"
            )
        if self.kind == OUTSIDE_AFTER_UNDO and e is not None:
            return (
                f"applied outside the dashboard (run {e.run_id} undid it "
                f"{utc_minute(e.at)}; it was applied again since)"
            )
        return "applied outside the dashboard"

    def to_json(self) -> dict[str, Any]:
        e = self.event
        return {
            "revision": self.revision,
            "kind": self.kind,
            "text": self.text,
            "run_id": e.run_id if e else None,
            "at": e.at.isoformat() if e else None,
            "requested_by": e.requested_by if e and self.kind == BY_RUN else None,
            "approved_by": e.approved_by if e and self.kind == BY_RUN else None,
            "run_status": e.run_status if e else None,
        }


def attribute(applied: Sequence[str], events: Iterable[RevisionEvent]) -> dict[str, AppliedBy]:
    """For every revision in `applied` (applied now), who applied it; `events` holds the
    newest `revision_applied` line per revision (later ones win if several are given)."""
    newest: dict[str, RevisionEvent] = {}
    for e in events:
        seen = newest.get(e.revision)
        if seen is None or (e.at, e.run_id) > (seen.at, seen.run_id):
            newest[e.revision] = e
    out: dict[str, AppliedBy] = {}
    for rev in applied:
        last = newest.get(rev)
        if last is None:
            out[rev] = AppliedBy(rev, OUTSIDE)
        elif last.direction == "upgrade":
            out[rev] = AppliedBy(rev, BY_RUN, last)
        else:
            out[rev] = AppliedBy(rev, OUTSIDE_AFTER_UNDO, last)
    return out

"""The statement gate (pure): what the approval covers, checked before each statement is sent.

An approval pins, per revision, the fingerprints of the statements the review showed. While
a run executes, every statement a revision's migration function sends is checked here
*before* it reaches the server:

- its fingerprint is on the revision's list: sent;
- the revision was shown as data-dependent and the approver acknowledged that: a data
  statement (SELECT, INSERT, UPDATE, DELETE) not seen ahead is sent, anything else refused;
- otherwise: refused. The run fails naming the statement and the revision.

Statements outside a revision's migration function (Alembic's version-table bookkeeping,
the runner's own guards) are not the revision's and are not checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dashboard.review.fingerprints import fingerprint, is_data_statement
from dashboard.review.model import Capture


@dataclass(frozen=True)
class ApprovedRevision:
    revision: str
    fingerprints: frozenset[str]
    data_dependent: bool = False
    acknowledged: bool = False  # data-dependence acknowledged by the approver

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "fingerprints": sorted(self.fingerprints),
            "data_dependent": self.data_dependent,
            "acknowledged": self.acknowledged,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApprovedRevision:
        return cls(
            revision=str(data["revision"]),
            fingerprints=frozenset(str(f) for f in data.get("fingerprints") or ()),
            data_dependent=bool(data.get("data_dependent")),
            acknowledged=bool(data.get("acknowledged")),
        )


@dataclass(frozen=True)
class Refused:
    """A statement the gate stopped: never sent."""

    revision: str | None
    sql: str
    fingerprint: str
    message: str


class StatementRefused(Exception):
    """Raised on the migration connection before an unapproved statement is sent."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(refused.message)
        self.refused = refused


def _one_line(sql: str, limit: int = 300) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class StatementGate:
    revisions: Mapping[str, ApprovedRevision] = field(default_factory=dict)
    exact: bool = True

    @classmethod
    def of(cls, revisions: Iterable[ApprovedRevision], *, exact: bool) -> StatementGate:
        return cls({r.revision: r for r in revisions}, exact)

    @classmethod
    def from_capture(cls, capture: Capture, acknowledged: Iterable[str] = ()) -> StatementGate:
        """The gate for exactly what a capture showed; `acknowledged`: revisions whose
        data-dependence was acknowledged."""
        ack = set(acknowledged)
        return cls.of(
            (
                ApprovedRevision(
                    r.revision,
                    frozenset(s.fingerprint for s in r.statements),
                    r.data_dependent,
                    r.revision in ack and r.data_dependent,
                )
                for r in capture.revisions
            ),
            exact=capture.exact,
        )

    def check(self, revision: str | None, sql: str) -> Refused | None:
        """None when `sql` may be sent by `revision`; else why not."""
        fp = fingerprint(sql)
        approved = self.revisions.get(revision) if revision is not None else None
        if approved is None:
            return Refused(
                revision,
                sql,
                fp,
                f"statement refused: revision {revision or '(none)'} is not in the approved "
                f"plan; it tried to send: {_one_line(sql)}",
            )
        if fp in approved.fingerprints:
            return None
        if approved.data_dependent and approved.acknowledged and is_data_statement(sql):
            return None
        if approved.data_dependent and is_data_statement(sql):
            why = (
                "it is data-dependent and sent a data statement not seen ahead, but its "
                "data-dependence was not acknowledged at approval"
            )
        elif is_data_statement(sql):
            why = "it sent a data statement that was not shown when the run was approved"
        else:
            why = (
                "it sent a schema-changing statement that was not shown when the run was "
                "approved (never allowed, acknowledged or not)"
            )
        return Refused(
            revision,
            sql,
            fp,
            f"statement refused before it reached the server: revision {revision} {why}: "
            f"{_one_line(sql)} (fingerprint {fp})",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "exact": self.exact,
            "revisions": [r.to_json() for r in self.revisions.values()],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StatementGate:
        return cls.of(
            (ApprovedRevision.from_json(r) for r in data.get("revisions") or ()),
            exact=bool(data.get("exact")),
        )

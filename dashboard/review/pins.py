"""What a request and an approval pin of a review (pure): the statement fingerprints of
each revision, how they were learned, and the acknowledgements given with a reason.

Stored as JSON on the run (`runs.review`, what the requester was shown) and on the
approval (`approvals.statements`, what the approver approved); the runner builds its
`StatementGate` from the approval's pins (or the request's, when no approval is needed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dashboard.review.gate import StatementGate
from dashboard.review.report import DATA_DEPENDENT, Review
from dashboard.validation import InvalidText, clean_text

MAX_ACK_REASON = 500
MAX_ACKS = 500


class InvalidAcknowledgement(ValueError):
    """An acknowledgement that names nothing in the review, or has no reason."""


@dataclass(frozen=True)
class Acknowledgement:
    """An acknowledged finding (`rule` a rule id, `index` the statement) or data-dependent
    revision (`rule` = "data-dependent", no index), with the reason and who gave it."""

    revision: str
    rule: str
    reason: str
    by: str
    index: int | None = None

    @property
    def key(self) -> str:
        return ack_key(self.rule, self.revision, self.index)

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "rule": self.rule,
            "index": self.index,
            "reason": self.reason,
            "by": self.by,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Acknowledgement:
        index = data.get("index")
        return cls(
            revision=str(data["revision"]),
            rule=str(data["rule"]),
            reason=str(data.get("reason") or ""),
            by=str(data.get("by") or ""),
            index=int(index) if index is not None else None,
        )


def ack_key(rule: str, revision: str, index: int | None) -> str:
    """The form value of an acknowledgement checkbox: `rule|revision|index`."""
    return f"{rule}|{revision}|{'' if index is None else index}"


def acknowledgeable(review: Review) -> dict[str, str]:
    """Every key an approver may acknowledge, with what it stands for in words."""
    out: dict[str, str] = {}
    for rev in review.revisions:
        if rev.data_dependent:
            out[ack_key(DATA_DEPENDENT, rev.revision, None)] = (
                f"revision {rev.revision} is data-dependent: {rev.data_reason or ''}".strip()
            )
    for stmt, finding in review.findings:
        if not finding.is_waived:
            out[ack_key(finding.rule, stmt.revision, stmt.index)] = (
                f"{finding.rule} ({finding.severity}) in statement {stmt.index + 1} of "
                f"revision {stmt.revision}"
            )
    return out


def parse_acknowledgements(raw: object, review: Review, by: str) -> list[Acknowledgement]:
    """Validate acknowledgements given as JSON objects `{"revision", "rule", "index"?,
    "reason"}` (or form keys `rule|revision|index` with one shared reason, see
    `from_form`) against the review. Raises InvalidAcknowledgement naming what is wrong."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidAcknowledgement("acknowledge must be a list of {revision, rule, reason}")
    if len(raw) > MAX_ACKS:
        raise InvalidAcknowledgement(f"at most {MAX_ACKS} acknowledgements")
    allowed = acknowledgeable(review)
    out: dict[str, Acknowledgement] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidAcknowledgement(f"acknowledge[{i}] must be an object")
        revision, rule, index = item.get("revision"), item.get("rule"), item.get("index")
        if not isinstance(revision, str) or not isinstance(rule, str):
            raise InvalidAcknowledgement(f"acknowledge[{i}] needs revision and rule (text)")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise InvalidAcknowledgement(f"acknowledge[{i}].index must be an integer")
        if rule == DATA_DEPENDENT:
            index = None
        key = ack_key(rule, revision, index)
        if key not in allowed:
            raise InvalidAcknowledgement(
                f"acknowledge[{i}]: the review has no {rule!r} finding for revision "
                f"{revision}" + (f" statement {index}" if index is not None else "")
            )
        try:
            reason = clean_text(
                item.get("reason"),
                f"acknowledge[{i}].reason",
                max_len=MAX_ACK_REASON,
                required=True,
                multiline=True,
            )
        except InvalidText as exc:
            raise InvalidAcknowledgement(
                exc.message
                if exc.kind != "required"
                else f"acknowledge[{i}] needs a reason: why is it acceptable?"
            ) from None
        assert reason is not None
        out[key] = Acknowledgement(revision, rule, reason, by, index)
    return list(out.values())


def from_form(keys: Sequence[str], reason: object) -> list[dict[str, Any]]:
    """Form checkboxes (`ack` = `rule|revision|index`) and one shared reason, as the JSON
    shape `parse_acknowledgements` reads."""
    items: list[dict[str, Any]] = []
    for key in keys:
        rule, _, rest = key.partition("|")
        revision, _, index = rest.partition("|")
        items.append(
            {
                "rule": rule,
                "revision": revision,
                "index": int(index) if index.isdigit() else None,
                "reason": reason,
            }
        )
    return items


def missing_data_acknowledgements(review: Review, acks: Iterable[Acknowledgement]) -> list[str]:
    """Data-dependent revisions nobody acknowledged."""
    done = {a.revision for a in acks if a.rule == DATA_DEPENDENT}
    return [r for r in review.data_dependent if r not in done]


@dataclass(frozen=True)
class ReviewPins:
    gate: StatementGate
    source: str
    note: str | None
    risk: str
    acknowledgements: tuple[Acknowledgement, ...] = ()

    @classmethod
    def of(cls, review: Review, acks: Iterable[Acknowledgement] = ()) -> ReviewPins:
        acknowledgements = tuple(acks)
        data_acks = {a.revision for a in acknowledgements if a.rule == DATA_DEPENDENT}
        return cls(
            StatementGate.from_capture(review.capture, data_acks),
            review.capture.source,
            review.capture.note,
            review.risk,
            acknowledgements,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **self.gate.to_json(),
            "source": self.source,
            "note": self.note,
            "risk": self.risk,
            "acknowledgements": [a.to_json() for a in self.acknowledgements],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReviewPins:
        return cls(
            StatementGate.from_json(data),
            str(data.get("source") or ""),
            data.get("note"),
            str(data.get("risk") or "none"),
            tuple(Acknowledgement.from_json(a) for a in data.get("acknowledgements") or ()),
        )


def changed_revisions(pinned: StatementGate, now: StatementGate) -> list[str]:
    """Revisions whose statements (fingerprints or data-dependence) differ between two pins."""
    names = list(dict.fromkeys([*pinned.revisions, *now.revisions]))
    out = []
    for name in names:
        a, b = pinned.revisions.get(name), now.revisions.get(name)
        if a is None or b is None:
            out.append(name)
        elif a.fingerprints != b.fingerprints or a.data_dependent != b.data_dependent:
            out.append(name)
    return out

"""The statement gate and the review pins, pure: what an approval covers, and how a
statement that was not shown is refused before it is sent (no database)."""

from __future__ import annotations

import pytest

from dashboard.review.fingerprints import (
    fingerprint,
    is_data_statement,
    reads_application_data,
)
from dashboard.review.gate import ApprovedRevision, StatementGate
from dashboard.review.model import Capture, CapturedStatement, RevisionCapture
from dashboard.review.pins import (
    InvalidAcknowledgement,
    ReviewPins,
    ack_key,
    changed_revisions,
    from_form,
    missing_data_acknowledgements,
    parse_acknowledgements,
)
from dashboard.review.report import DATA_DEPENDENT, build_review

ADD = "ALTER TABLE orders ADD COLUMN note text"
INDEX = "CREATE INDEX orders_note ON orders (note)"
SELECT = "SELECT id FROM customers WHERE id > 0 ORDER BY id LIMIT 500"
UPDATE = "UPDATE customers SET order_count = 0 WHERE id >= 1 AND id <= 500"


def stmt(rev: str, index: int, sql: str, **kw: object) -> CapturedStatement:
    return CapturedStatement(rev, index, sql, fingerprint(sql), True, **kw)  # type: ignore[arg-type]


def capture(*revisions: RevisionCapture, exact: bool = True) -> Capture:
    return Capture(exact=exact, source="rehearsal" if exact else "offline", revisions=revisions)


def test_fingerprints_normalise_literals_and_parameters_not_names() -> None:
    assert fingerprint("UPDATE t SET a = 1 WHERE id > 5") == fingerprint(
        "update T set A = $1 where ID > $2"
    )
    assert fingerprint("ALTER TABLE t ADD COLUMN b int") != fingerprint(
        "ALTER TABLE t ADD COLUMN c int"
    )
    assert fingerprint("not sql at all (").startswith("sha256:")


@pytest.mark.parametrize(
    ("sql", "data"),
    [
        (SELECT, True),
        (UPDATE, True),
        ("INSERT INTO t (a) VALUES (1)", True),
        ("DELETE FROM t WHERE a = 1", True),
        ("SELECT 1 INTO newtable", False),
        ("DROP TABLE t", False),
        ("UPDATE t SET a = 1; DROP TABLE t", False),
        ("garbage (", False),
    ],
)
def test_data_statements(sql: str, data: bool) -> None:
    assert is_data_statement(sql) is data


def test_gate_sends_what_was_shown_and_refuses_anything_else() -> None:
    gate = StatementGate.of([ApprovedRevision("r1", frozenset({fingerprint(ADD)}))], exact=True)
    assert gate.check("r1", ADD) is None
    assert gate.check("r1", ADD.lower()) is None  # same statement, other spelling
    refused = gate.check("r1", INDEX)
    assert refused is not None and refused.revision == "r1"
    assert "r1" in refused.message and "CREATE INDEX orders_note" in refused.message
    assert "schema-changing" in refused.message
    data = gate.check("r1", UPDATE)
    assert data is not None and "data statement" in data.message
    other = gate.check("r9", ADD)
    assert other is not None and "not in the approved plan" in other.message


def test_acknowledged_data_dependent_revision_may_send_data_but_never_schema() -> None:
    rev = ApprovedRevision("r2", frozenset({fingerprint(SELECT)}), True, acknowledged=True)
    gate = StatementGate.of([rev], exact=True)
    assert gate.check("r2", UPDATE) is None
    assert gate.check("r2", "DELETE FROM customers WHERE id = 3") is None
    refused = gate.check("r2", "DROP TABLE customers")
    assert refused is not None and "never allowed" in refused.message
    unacked = StatementGate.of(
        [ApprovedRevision("r2", frozenset({fingerprint(SELECT)}), True, False)], exact=True
    )
    no = unacked.check("r2", UPDATE)
    assert no is not None and "not acknowledged" in no.message


def test_gate_round_trips_through_json() -> None:
    gate = StatementGate.of(
        [ApprovedRevision("r1", frozenset({"a", "b"}), True, True)], exact=False
    )
    assert StatementGate.from_json(gate.to_json()) == gate


def _review(exact: bool = True) -> object:
    cap = capture(
        RevisionCapture("r1", (stmt("r1", 0, ADD), stmt("r1", 1, INDEX))),
        RevisionCapture(
            "r2",
            (stmt("r2", 2, SELECT, reads_rows=True),),
            data_dependent=True,
            data_reason="reads rows from customers",
        ),
        exact=exact,
    )
    return build_review(
        direction="upgrade",
        target="heads",
        from_heads=("r0",),
        to_heads=("r2",),
        capture=cap,
        sql_sha256="s" * 64,
        messages={"r1": "add note", "r2": "backfill"},
        waivers={},
    )


def test_review_pins_acknowledgements_and_data_dependence() -> None:
    review = _review()
    assert review.data_dependent == ("r2",)  # type: ignore[attr-defined]
    # CREATE INDEX on an existing table without CONCURRENTLY is a finding
    rules = {f.rule for _, f in review.findings}  # type: ignore[attr-defined]
    assert "require-concurrent-index-creation" in rules
    assert missing_data_acknowledgements(review, []) == ["r2"]  # type: ignore[arg-type]
    acks = parse_acknowledgements(
        [
            {"revision": "r2", "rule": DATA_DEPENDENT, "reason": "batched, tested on staging"},
            {
                "revision": "r1",
                "rule": "require-concurrent-index-creation",
                "index": 1,
                "reason": "orders is tiny",
            },
        ],
        review,  # type: ignore[arg-type]
        "bob",
    )
    assert missing_data_acknowledgements(review, acks) == []  # type: ignore[arg-type]
    pins = ReviewPins.of(review, acks)  # type: ignore[arg-type]
    assert pins.gate.revisions["r2"].acknowledged
    assert not pins.gate.revisions["r1"].acknowledged
    back = ReviewPins.from_json(pins.to_json())
    assert back.gate == pins.gate and back.acknowledgements == pins.acknowledgements
    assert back.acknowledgements[0].by == "bob"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("yes", "must be a list"),
        ([1], "must be an object"),
        ([{"revision": "r2", "rule": DATA_DEPENDENT}], "needs a reason"),
        ([{"revision": "r2", "rule": DATA_DEPENDENT, "reason": "   "}], "needs a reason"),
        ([{"revision": "r1", "rule": DATA_DEPENDENT, "reason": "x"}], "no 'data-dependent'"),
        ([{"revision": "r1", "rule": "ban-drop-table", "index": 0, "reason": "x"}], "no 'ban"),
        ([{"revision": "r1", "rule": "x", "index": "1", "reason": "x"}], "integer"),
        ([{"rule": DATA_DEPENDENT, "reason": "x"}], "needs revision and rule"),
    ],
)
def test_bad_acknowledgements_are_named(raw: object, needle: str) -> None:
    with pytest.raises(InvalidAcknowledgement, match=needle):
        parse_acknowledgements(raw, _review(), "bob")  # type: ignore[arg-type]


def test_form_acknowledgements_share_one_reason() -> None:
    items = from_form(
        [ack_key(DATA_DEPENDENT, "r2", None), ack_key("x-rule", "r1", 1)], "checked on staging"
    )
    assert items == [
        {"rule": DATA_DEPENDENT, "revision": "r2", "index": None, "reason": "checked on staging"},
        {"rule": "x-rule", "revision": "r1", "index": 1, "reason": "checked on staging"},
    ]


def test_changed_revisions_compares_fingerprints_and_data_dependence() -> None:
    a = StatementGate.of([ApprovedRevision("r1", frozenset({"x"}))], exact=True)
    b = StatementGate.of([ApprovedRevision("r1", frozenset({"x", "y"}))], exact=True)
    c = StatementGate.of([ApprovedRevision("r1", frozenset({"x"}), True)], exact=True)
    assert changed_revisions(a, a) == []
    assert changed_revisions(a, b) == ["r1"]
    assert changed_revisions(a, c) == ["r1"]


def test_catalog_reads_do_not_make_a_revision_data_dependent() -> None:
    # SQLAlchemy's "does this enum exist" check reads the replayed schema, not data
    check = "SELECT pg_catalog.pg_type.typname FROM pg_catalog.pg_type WHERE typname = $1"
    assert not reads_application_data(check)
    assert not reads_application_data("SELECT relname FROM pg_class")
    assert reads_application_data(SELECT)
    assert reads_application_data("SELECT c.id FROM customers c JOIN pg_class p ON true")

"""Pure logic: state classification and irreversibility, no database."""

from __future__ import annotations

import pytest

from dashboard.formatting import duration, truncate_query
from dashboard.migrations.classify import classify, downgrade_verdict

PARENT = {"b": "a", "c": "b"}


def known(rev: str) -> bool:
    return rev in {"a", "b", "c"}


def is_ancestor(a: str, b: str) -> bool:
    cur = PARENT.get(b)
    while cur:
        if cur == a:
            return True
        cur = PARENT.get(cur)
    return False


@pytest.mark.parametrize(
    ("exists", "current", "state", "says"),
    [
        (False, [], "uninitialized", "The version table does not exist"),
        (True, [], "pending", "The version table is empty: every revision is pending."),
        (True, ["a"], "pending", "Revisions exist that the database has not applied yet."),
        (True, ["c"], "up_to_date", "The database is at the head revision."),
        (True, ["zz"], "ahead", "The database is at revision zz, which the migration scripts"),
        (True, ["c", "zz"], "ahead", "The database is at revision zz, which"),
        (True, ["a", "c"], "diverged", "it records both a and its descendant c."),
    ],
)
def test_classify(exists: bool, current: list[str], state: str, says: str) -> None:
    got, why = classify(
        has_version_table=exists,
        current=current,
        heads=["c"],
        known=known,
        is_ancestor=is_ancestor,
    )
    assert got == state
    # the explanation names this state's cause (and, where there is one, the revisions)
    assert isinstance(why, str) and says in why, why


@pytest.mark.parametrize(
    ("body", "verdict"),
    [
        ("    op.drop_table('x')", None),
        ("    pass", "downgrade() does nothing"),
        ('    """Nothing to undo."""', "downgrade() does nothing"),
        ('    """doc"""\n    ...', "downgrade() does nothing"),
        ("    raise NotImplementedError('no way back')", "downgrade() raises NotImplementedError"),
        ("    raise RuntimeError", "downgrade() raises RuntimeError"),
        ("    if False:\n        raise RuntimeError\n    op.drop_table('x')", None),
    ],
)
def test_downgrade_verdict(body: str, verdict: str | None) -> None:
    src = f"def upgrade():\n    pass\n\n\ndef downgrade():\n{body}\n"
    assert downgrade_verdict(src) == verdict


def test_missing_downgrade_and_syntax_error() -> None:
    assert downgrade_verdict("def upgrade():\n    pass\n") == "no downgrade() function"
    assert "does not parse" in str(downgrade_verdict("def downgrade(:\n"))


def test_formatting() -> None:
    assert duration(5) == "5s"
    assert duration(0.0) == "0.0s" == duration(0.04)  # measured ages read alike
    assert duration(2.0) == "2.0s" and duration(12.0) == "12s"
    assert duration(245) == "4m 05s"
    assert duration(2 * 3600 + 180) == "2h 03m"
    assert duration(None) == "–"
    assert truncate_query("select   1\n from x") == "select 1 from x"
    assert truncate_query("x" * 500, 10).endswith("…")

"""Plans are pure: the demo scripts plus a set of current heads, no database."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from dashboard.migrations.plan import Plan, PlanError, make_plan, same_steps
from tests.runs_support import BACKFILL, BASE, CIC_REV, DEMO, ENUM_REV, HEAD, MERGE, add_revision

CATALOG = "c4d8e1f2a903"
NOTES = "d5e9f3a4b804"
SD = ScriptDirectory(str(DEMO))


def plan(cur: tuple[str, ...], direction: str, target: str) -> Plan:
    return make_plan(SD, cur, direction, target)


def err(cur: tuple[str, ...], direction: str, target: str) -> PlanError:
    with pytest.raises(PlanError) as e:
        plan(cur, direction, target)
    return e.value


def test_upgrade_to_heads_from_empty_in_apply_order() -> None:
    p = plan((), "upgrade", "heads")
    assert p.revisions[0] == BASE and p.revisions[-1] == HEAD and len(p.revisions) == 8
    assert p.revisions.index(MERGE) > max(p.revisions.index(CATALOG), p.revisions.index(NOTES))
    assert p.to_heads == (HEAD,) and p.confirm_value == HEAD and p.from_label == "base"
    assert [s.revision for s in p.irreversible_steps] == [HEAD]
    merge = p.steps[p.revisions.index(MERGE)]
    assert merge.is_merge_point and set(merge.down_revisions) == {CATALOG, NOTES}
    assert all(len(s.file_sha256) == 64 for s in p.steps)


def test_relative_upgrade_through_a_branch_point() -> None:
    one = plan((BASE,), "upgrade", "+1")
    assert len(one.revisions) == 1 and one.revisions[0] in (CATALOG, NOTES)
    two = plan((BASE,), "upgrade", "+2")
    assert sorted(two.revisions) == sorted([CATALOG, NOTES])
    assert two.to_heads == tuple(sorted([CATALOG, NOTES]))
    assert two.confirm_value == ",".join(sorted([CATALOG, NOTES]))
    merge = plan(tuple(sorted([CATALOG, NOTES])), "upgrade", "+1")
    assert merge.revisions == [MERGE] and merge.to_heads == (MERGE,)


def test_upgrade_one_branch_then_the_other() -> None:
    p = plan((CATALOG,), "upgrade", NOTES[:6])
    assert p.revisions == [NOTES] and p.to_heads == tuple(sorted([CATALOG, NOTES]))
    assert plan((BASE,), "upgrade", "catalog@head").to_heads == (HEAD,)


def test_downgrades_across_merge_and_branches() -> None:
    p = plan((ENUM_REV,), "downgrade", NOTES)
    assert p.revisions == [ENUM_REV, MERGE]
    assert p.to_heads == tuple(sorted([CATALOG, NOTES]))
    p = plan(tuple(sorted([CATALOG, NOTES])), "downgrade", BASE)
    assert sorted(p.revisions) == sorted([CATALOG, NOTES]) and p.to_heads == (BASE,)
    p = plan((MERGE,), "downgrade", "-1")
    assert p.revisions == [MERGE] and p.to_heads == tuple(sorted([CATALOG, NOTES]))
    p = plan((BACKFILL,), "downgrade", "base")
    assert p.revisions[0] == BACKFILL and p.revisions[-1] == BASE and p.to_heads == ()
    assert p.confirm_value == "base"
    assert all(not s.is_upgrade for s in p.steps)


@pytest.mark.parametrize(
    ("cur", "direction", "target", "code", "says"),
    [
        ((BASE,), "upgrade", "deadbeef", "unknown", "'deadbeef'"),
        ((BASE,), "upgrade", "", "invalid", "target is empty"),
        ((BASE,), "upgrade", "x'; drop table", "invalid", "is not a revision identifier"),
        ((BASE,), "sideways", "heads", "invalid", "not 'sideways'"),
        ((BASE,), "upgrade", "-1", "invalid", "-1: an upgrade takes +N"),
        ((BASE,), "downgrade", "+1", "invalid", "+1: a downgrade takes -N"),
        (
            (HEAD,),
            "upgrade",
            "heads",
            "empty",
            f"nothing to do: the database is already at heads ({HEAD})",
        ),
        ((), "downgrade", "base", "empty", "nothing to do: the database is already at base (base)"),
        ((BASE,), "upgrade", BASE, "empty", f"already at {BASE} ({BASE})"),
        ((HEAD,), "upgrade", CATALOG, "unreachable", f"{CATALOG} is already applied"),
        ((BASE,), "upgrade", "base", "unreachable", "base is below every revision"),
        ((ENUM_REV,), "downgrade", CIC_REV, "unreachable", f"{CIC_REV} is not applied"),
        ((CATALOG,), "downgrade", NOTES, "unreachable", f"{NOTES} is not applied"),
        ((BASE,), "downgrade", "heads", "unreachable", "heads is not below the database"),
        ((BASE,), "upgrade", "+99", "unreachable", "+99: only 7 revision(s) are pending"),
        ((BASE,), "downgrade", "-2", "below_base", "-2: only 1 revision(s) are applied"),
        (
            (tuple(sorted([CATALOG, NOTES]))),
            "downgrade",
            "-1",
            "ambiguous",
            f"2 heads applied ({CATALOG}, {NOTES})",
        ),
        (
            (HEAD,),
            "downgrade",
            "-1",
            "irreversible",
            f"revision {HEAD} cannot be downgraded (downgrade() raises NotImplementedError)",
        ),
        (("feedfacecafe",), "upgrade", "heads", "unknown", "revision feedfacecafe, which"),
    ],
)
def test_bad_targets(
    cur: tuple[str, ...], direction: str, target: str, code: str, says: str
) -> None:
    e = err(cur, direction, target)
    assert e.code == code, e.message
    # the message names what was asked and why it cannot be planned
    assert says in e.message and str(e) == e.message, e.message


def test_ambiguous_prefix(tmp_path: Path, demo_scripts: Path) -> None:
    add_revision(demo_scripts, "abcd11110000", HEAD, "pass")
    add_revision(demo_scripts, "abcd22220000", "abcd11110000", "pass")
    sd = ScriptDirectory(str(demo_scripts))
    with pytest.raises(PlanError) as e:
        make_plan(sd, (HEAD,), "upgrade", "abcd")
    assert e.value.code == "ambiguous"


def test_plan_round_trips_and_detects_changed_scripts(demo_scripts: Path) -> None:
    p = plan((BASE,), "upgrade", "heads")
    assert Plan.from_json(p.to_json()) == p
    assert same_steps(p, Plan.from_json(p.to_json()))
    changed = demo_scripts / "versions" / f"{NOTES}_add_order_notes.py"
    changed.write_text(changed.read_text() + "\n# edited\n")
    p2 = make_plan(ScriptDirectory(str(demo_scripts)), (BASE,), "upgrade", "heads")
    assert p2.revisions == p.revisions and not same_steps(p, p2)

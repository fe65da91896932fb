"""Migration plans: which revisions run, in which order, and where the database ends up.

Pure given a loaded `ScriptDirectory` and the database's current heads: nothing here
touches a database. Targets:

- upgrade: `heads` / `head`, a revision id or unique prefix, a branch label
  (`catalog@head`), or `+N` (the next N pending revisions in apply order);
- downgrade: `base`, a revision id or prefix, or `-N` (undo the last N revisions; refused
  when several heads are applied, because "the last one" is then ambiguous).

Every problem is a `PlanError` with a `code` a caller can map to an HTTP status:
`invalid`, `unknown`, `ambiguous`, `unreachable`, `below_base`, `empty`, `irreversible`,
`scripts`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from alembic.runtime.migration import HeadMaintainer, MigrationStep, RevisionStep
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError

from dashboard.migrations.revisions import RevisionFiles, shared_files

UPGRADE = "upgrade"
DOWNGRADE = "downgrade"
DIRECTIONS = (UPGRADE, DOWNGRADE)
_RELATIVE = re.compile(r"^([+-])(\d{1,4})$")
_TARGET_OK = re.compile(r"^[A-Za-z0-9_@+\-.,]{1,200}$")


class PlanError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PlanStep:
    revision: str
    down_revisions: tuple[str, ...]
    message: str
    is_upgrade: bool
    is_merge_point: bool
    is_branch_point: bool
    irreversible: bool
    irreversible_reason: str | None
    file: str
    file_sha256: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["down_revisions"] = list(self.down_revisions)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlanStep:
        d = dict(data)
        d["down_revisions"] = tuple(d.get("down_revisions") or ())
        return cls(**d)


@dataclass(frozen=True)
class Plan:
    direction: str
    target: str  # as requested: "heads", "+1", "c4d8", ...
    from_heads: tuple[str, ...]  # sorted
    to_heads: tuple[str, ...]  # sorted: what the version table must read afterwards
    steps: tuple[PlanStep, ...] = field(default_factory=tuple)

    @property
    def revisions(self) -> list[str]:
        return [s.revision for s in self.steps]

    @property
    def irreversible_steps(self) -> list[PlanStep]:
        return [s for s in self.steps if s.irreversible]

    @property
    def confirm_value(self) -> str:
        """What the operator types to confirm: the revision the database ends at."""
        return to_label(self.to_heads)

    @property
    def from_label(self) -> str:
        return to_label(self.from_heads)

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "target": self.target,
            "from": list(self.from_heads),
            "to": list(self.to_heads),
            "confirm": self.confirm_value,
            "steps": [s.to_json() for s in self.steps],
            "irreversible": [s.revision for s in self.irreversible_steps],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            direction=data["direction"],
            target=data["target"],
            from_heads=tuple(data["from"]),
            to_heads=tuple(data["to"]),
            steps=tuple(PlanStep.from_json(s) for s in data["steps"]),
        )


def to_label(heads: Sequence[str]) -> str:
    return ",".join(sorted(heads)) if heads else "base"


class _SimulatedHeads(HeadMaintainer):
    """Alembic's own version-table bookkeeping, on a set instead of a table."""

    def __init__(self, heads: Iterable[str]) -> None:
        self.heads = set(heads)

    def _insert_version(self, version: str) -> None:
        self.heads.add(version)

    def _delete_version(self, version: str) -> None:
        self.heads.remove(version)

    def _update_version(self, from_: str, to_: str) -> None:
        self.heads.remove(from_)
        self.heads.add(to_)


def simulate(current: Iterable[str], steps: Sequence[MigrationStep]) -> tuple[str, ...]:
    sim = _SimulatedHeads(current)
    for step in steps:
        sim.update_to_step(step)  # type: ignore[arg-type]
    return tuple(sorted(sim.heads))


def _step_info(step: RevisionStep, files: RevisionFiles, fresh: bool) -> PlanStep:
    script: Script = step.revision
    record = files.get(script.path, fresh=fresh)
    return PlanStep(
        revision=script.revision,
        down_revisions=tuple(script._normalized_down_revisions),
        message=(script.doc or "").strip().splitlines()[0] if script.doc else "",
        is_upgrade=step.is_upgrade,
        is_merge_point=bool(script.is_merge_point),
        is_branch_point=bool(script.is_branch_point),
        irreversible=record.irreversible,
        irreversible_reason=record.irreversible_reason,
        file=record.file,
        file_sha256=record.sha256,
    )


def _alembic_error(exc: Exception) -> PlanError:
    text = str(exc)
    low = text.lower()
    if "can't locate revision" in low or "no such revision" in low or "not present" in low:
        return PlanError("unknown", text)
    if "ambiguous" in low or "multiple revisions start with" in low or "multiple head" in low:
        return PlanError("ambiguous", text)
    if "not a valid" in low or "is not an ancestor" in low:
        return PlanError("unreachable", text)
    if "didn't produce" in low:
        return PlanError("below_base", text)
    return PlanError("invalid", text)


def _resolve(sd: ScriptDirectory, target: str) -> tuple[Script, ...]:
    """Resolve an explicit target (id, prefix, label, `label@head`) to scripts."""
    try:
        revs = sd.revision_map.get_revisions(target)
    except (CommandError, RevisionError) as exc:
        raise _alembic_error(exc) from None
    except AssertionError:
        raise PlanError("invalid", f"{target!r} is not a revision identifier") from None
    scripts = tuple(r for r in revs if r is not None)
    return scripts  # type: ignore[return-value]


def _ancestors(sd: ScriptDirectory, revs: Iterable[str]) -> set[str]:
    """Every revision at or below `revs` (inclusive)."""
    out: set[str] = set()
    revs = list(revs)
    if not revs:
        return out
    for s in sd.revision_map.iterate_revisions(tuple(revs), "base"):
        if s is not None:
            out.add(s.revision)
    return out


def make_plan(
    sd: ScriptDirectory,
    current: Iterable[str],
    direction: str,
    target: str,
    *,
    fresh_files: bool = False,
    files: RevisionFiles | None = None,
) -> Plan:
    """Plan `direction` from `current` heads to `target`. Raises PlanError.

    Each step's file hash and downgrade verdict come from `revisions.py` (the process-wide
    cache unless `files` is given); `fresh_files` reads every file again instead of
    trusting the cache (a last check before a run). It reads the revision files: blocking
    I/O, cheap when the cache holds them.
    """
    cur = tuple(sorted(set(current)))
    if direction not in DIRECTIONS:
        raise PlanError("invalid", f"direction must be 'upgrade' or 'downgrade', not {direction!r}")
    target = (target or "").strip()
    if not target:
        raise PlanError("invalid", "target is empty (use heads, base, +1, -1 or a revision id)")
    if not _TARGET_OK.match(target):
        raise PlanError("invalid", f"{target[:60]!r} is not a revision identifier")
    for rev in cur:
        try:
            known = sd.revision_map.get_revision(rev) is not None
        except (CommandError, RevisionError):
            known = False
        if not known:
            raise PlanError(
                "unknown",
                f"the database is at revision {rev}, which the migration scripts do not contain; "
                "nothing can be planned from there",
            )

    rel = _RELATIVE.match(target)
    try:
        if rel:
            steps = _relative_steps(sd, cur, direction, rel.group(1), int(rel.group(2)), target)
        elif direction == UPGRADE:
            steps = _upgrade_steps(sd, cur, target)
        else:
            steps = _downgrade_steps(sd, cur, target)
    except (CommandError, RevisionError) as exc:
        raise _alembic_error(exc) from None

    if not steps:
        where = to_label(cur)
        raise PlanError("empty", f"nothing to do: the database is already at {target} ({where})")
    cache = files if files is not None else shared_files()
    infos = tuple(_step_info(s, cache, fresh_files) for s in steps)
    if direction == DOWNGRADE:
        blocked = [s for s in infos if s.irreversible]
        if blocked:
            s = blocked[0]
            raise PlanError(
                "irreversible",
                f"revision {s.revision} cannot be downgraded ({s.irreversible_reason}); "
                "the plan would stop there",
            )
    to_heads = simulate(cur, steps)
    return Plan(direction=direction, target=target, from_heads=cur, to_heads=to_heads, steps=infos)


def _relative_steps(
    sd: ScriptDirectory, cur: tuple[str, ...], direction: str, sign: str, n: int, target: str
) -> list[RevisionStep]:
    if n < 1:
        raise PlanError("invalid", f"{target}: the step count must be at least 1")
    if direction == UPGRADE:
        if sign != "+":
            raise PlanError("invalid", f"{target}: an upgrade takes +N (or use a downgrade)")
        full = sd._upgrade_revs("heads", cur)  # type: ignore[arg-type]
        if not full:
            raise PlanError("empty", "nothing to do: the database is already at the head")
        if n > len(full):
            raise PlanError(
                "unreachable",
                f"{target}: only {len(full)} revision(s) are pending",
            )
        return full[:n]
    if sign != "-":
        raise PlanError("invalid", f"{target}: a downgrade takes -N (or use an upgrade)")
    if not cur:
        raise PlanError("empty", "nothing to do: no revision is applied (already at base)")
    if len(cur) > 1:
        raise PlanError(
            "ambiguous",
            f"{target}: the database has {len(cur)} heads applied ({', '.join(cur)}); "
            "choose the revision to downgrade to instead",
        )
    full = sd._downgrade_revs("base", cur[0])
    if n > len(full):
        raise PlanError(
            "below_base",
            f"{target}: only {len(full)} revision(s) are applied; that would go below base",
        )
    return full[:n]


def _upgrade_steps(sd: ScriptDirectory, cur: tuple[str, ...], target: str) -> list[RevisionStep]:
    if target == "base":
        raise PlanError("unreachable", "base is below every revision: use a downgrade")
    if target not in ("heads", "head") and not target.endswith("@head"):
        scripts = _resolve(sd, target)
        applied = _ancestors(sd, cur)
        for s in scripts:
            if s.revision in applied and s.revision not in cur:
                raise PlanError(
                    "unreachable",
                    f"{s.revision} is already applied (below the current revision "
                    f"{to_label(cur)}); reaching it is a downgrade",
                )
    return sd._upgrade_revs(target, cur)  # type: ignore[arg-type]


def _downgrade_steps(sd: ScriptDirectory, cur: tuple[str, ...], target: str) -> list[RevisionStep]:
    if target in ("heads", "head") or target.endswith("@head"):
        raise PlanError("unreachable", f"{target} is not below the database: use an upgrade")
    if target != "base":
        scripts = _resolve(sd, target)
        applied = _ancestors(sd, cur)
        for s in scripts:
            if s.revision not in applied:
                raise PlanError(
                    "unreachable",
                    f"{s.revision} is not applied (not below the current revision "
                    f"{to_label(cur)}); reaching it is an upgrade",
                )
        target = ",".join(s.revision for s in scripts) if len(scripts) > 1 else scripts[0].revision
    if not cur:
        return []
    return sd._downgrade_revs(target, cur if len(cur) > 1 else cur[0])  # type: ignore[arg-type]


def build_steps(sd: ScriptDirectory, plan: Plan) -> list[RevisionStep]:
    """Alembic step objects for a stored plan (the runner executes exactly these)."""
    out: list[RevisionStep] = []
    for s in plan.steps:
        script = sd.get_revision(s.revision)
        if script is None:
            raise PlanError("scripts", f"revision {s.revision} is no longer in the scripts")
        if s.is_upgrade:
            out.append(MigrationStep.upgrade_from_script(sd.revision_map, script))
        else:
            out.append(MigrationStep.downgrade_from_script(sd.revision_map, script))
    return out


def same_steps(a: Plan, b: Plan) -> bool:
    return [(s.revision, s.is_upgrade, s.file_sha256) for s in a.steps] == [
        (s.revision, s.is_upgrade, s.file_sha256) for s in b.steps
    ]

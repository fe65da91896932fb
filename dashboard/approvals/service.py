"""Approve, reject and execute runs (I/O around the pure rules in `rules.py`).

Every refusal raises a `RunError` (the HTTP layer maps it to its status code) after an
audit row has been written for it; every decision is written atomically with its audit
row (`StateStore.decide`). Pins are recomputed from disk and from the database itself,
never from caches: the revision files are read and hashed, the SQL is rendered again
from the stored plan, and the version table is read.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory

from dashboard.approvals import rules
from dashboard.approvals.rules import PinChange, Pins, Refusal, RunFacts
from dashboard.auth.identity import Identity
from dashboard.migrations.plan import Plan, PlanError
from dashboard.migrations.preview import Preview
from dashboard.migrations.revisions import plan_file_pins
from dashboard.review.pins import (
    InvalidAcknowledgement,
    ReviewPins,
    changed_revisions,
    missing_data_acknowledgements,
    parse_acknowledgements,
)
from dashboard.runs.errors import (
    RunConflict,
    RunError,
    RunForbidden,
    RunInvalid,
    RunNotFound,
    RunUnauthenticated,
    RunUnavailable,
)
from dashboard.runs.progress import log_line
from dashboard.runs.records import Approval, Run
from dashboard.runs.service import RunService
from dashboard.state import model as sm

log = logging.getLogger(__name__)

# The rules speak in HTTP-like statuses; the domain errors carry none (web/errors maps back).
_ERRORS: dict[int, type[RunError]] = {
    400: RunError,
    401: RunUnauthenticated,
    403: RunForbidden,
    404: RunNotFound,
    409: RunConflict,
    422: RunInvalid,
    503: RunUnavailable,
}


def status_of(exc: RunError) -> int:
    """The status the rules would give this error (for the audit row's detail)."""
    for status, cls in _ERRORS.items():
        if type(exc) is cls:
            return status
    return 400


class Approvals:
    """The approval workflow for one runner (target)."""

    def __init__(self, runs: RunService) -> None:
        self.runs = runs
        self.ctx = runs.ctx
        self.repo = runs.ctx.repo
        self.settings = runs.settings

    # -- reading -----------------------------------------------------------------------
    async def _load(self, run_id: int) -> tuple[Run, Approval | None]:
        await self.repo.ensure()
        run = await self.runs.record(run_id)
        return run, await self.repo.approval(run_id)

    async def pins_now(self, run: Run) -> Pins:
        """Recompute the pins of a run's plan: heads, revision file hashes, SQL hash."""
        return (await self._recompute(run))[0]

    async def _recompute(self, run: Run) -> tuple[Pins, ScriptDirectory | None, Preview | None]:
        """The pins now, with the scripts and the offline render they were computed from
        (None when they could not be loaded or rendered: the SQL pin then says why)."""
        runner = self.runs
        plan = Plan.from_json(run.plan)
        heads = (await runner.read_current()).current
        location = Path(runner.target.script_location)
        sql_sha, sql_error = "", None
        sd: ScriptDirectory | None = None
        preview: Preview | None = None
        try:
            sd = await runner.load_scripts()
            preview = await runner.render(sd, plan)
            sql_sha = preview.sql_sha256
        except RunError as exc:
            sql_error = exc.message
        except (PlanError, Exception) as exc:  # a revision that no longer renders
            sql_error = f"{type(exc).__name__}: {exc}"[:300]
        files = await asyncio.to_thread(plan_file_pins, location, plan, sd)
        return Pins.make(sql_sha, files, heads, sql_error), sd, preview

    # -- helpers -----------------------------------------------------------------------
    async def _audit_refusal(
        self, ident: Identity, action: str, run_id: int, status: int, code: str, reason: str
    ) -> None:
        await self.ctx.audit.record(
            self.ctx.event(
                ident.display,
                ident.address,
                action,
                "denied" if status in (401, 403) else "refused",
                {
                    "run_id": run_id,
                    "status_code": status,
                    "code": code,
                    "reason": reason,
                    "role": ident.role,
                },
            )
        )

    async def _refuse(
        self, ident: Identity, action: str, run_id: int, refusal: Refusal
    ) -> RunError:
        await self._audit_refusal(
            ident, action, run_id, refusal.status_code, refusal.code, refusal.message
        )
        cls = _ERRORS.get(refusal.status_code, RunError)
        return cls(refusal.message, code=refusal.code, extra=dict(refusal.extra))

    async def _void(
        self,
        ident: Identity,
        action: str,
        run: Run,
        changes: list[PinChange],
        *,
        when: str,
    ) -> RunError:
        """The pins moved: the run fails (nothing ran) with the changes named."""
        run_id = run.id
        message = rules.void_message(changes, when=when)
        detail = {"approval_void": [c.to_json() for c in changes], "when": when}
        await self.repo.transition(
            run_id,
            (sm.AWAITING_APPROVAL,),
            {
                "status": sm.FAILED,
                "finished_at": "now",
                "error": message,
                "error_detail": detail,
                "verified_revs": None,
            },
            log=[log_line(run_id, "approval_void", message)],
        )
        refusal = Refusal(
            409,
            "approval_void" if when == "approved" else "request_stale",
            message,
            {"changed": sorted({c.what for c in changes}), "changes": detail["approval_void"]},
        )
        return await self._refuse(ident, action, run_id, refusal)

    async def _expired(self, ident: Identity, action: str, run_id: int, refusal: Refusal) -> None:
        await self.runs.recovery.expire_due()
        raise await self._refuse(ident, action, run_id, refusal)

    # -- actions -----------------------------------------------------------------------
    async def approve(
        self,
        run_id: int,
        ident: Identity,
        *,
        sql_sha256: str | None = None,
        comment: str | None = None,
        acknowledge: object = None,
    ) -> dict[str, Any]:
        action = "run.approve"
        run, approval = await self._load(run_id)
        now = self.runs.clock()
        facts = RunFacts.of(run, approval)
        refusal = rules.check_approve(
            facts, ident.display, allow_self=self.settings.allow_self_approval, now=now
        )
        if refusal is not None:
            if refusal.code == "expired":
                await self._expired(ident, action, run_id, refusal)
            raise await self._refuse(ident, action, run_id, refusal)
        if sql_sha256 is not None and sql_sha256 != run.sql_sha256:
            raise await self._refuse(
                ident,
                action,
                run_id,
                Refusal(
                    409,
                    "sql_changed",
                    f"you reviewed SQL with SHA-256 {sql_sha256[:12]}…, but run {run_id} is "
                    f"for {run.sql_sha256[:12]}…; reload the run page",
                ),
            )
        # Pin what the approver approves, and check it is still what was requested.
        pins, sd, preview = await self._recompute(run)
        changes = rules.compare_pins(Pins.of_request(run), pins, when="requested")
        if changes:
            raise await self._void(ident, action, run, changes, when="requested")
        # unchanged pins: the scripts loaded and the SQL rendered (else the SQL pin moved)
        assert sd is not None and preview is not None
        review = await self.runs.review_of(sd, Plan.from_json(run.plan), preview, live=False)
        if run.review:
            moved = changed_revisions(
                ReviewPins.from_json(run.review).gate, ReviewPins.of(review).gate
            )
            if moved:
                change = PinChange(
                    "statements",
                    f"the statements of revision(s) {', '.join(moved)} are not the ones shown "
                    "when the run was requested",
                    "",
                    "",
                )
                raise await self._void(ident, action, run, [change], when="requested")
        try:
            acks = parse_acknowledgements(acknowledge, review, ident.display)
        except InvalidAcknowledgement as exc:
            raise await self._refuse(
                ident, action, run_id, Refusal(400, "invalid_acknowledgement", str(exc))
            ) from None
        missing = missing_data_acknowledgements(review, acks)
        if missing:
            raise await self._refuse(
                ident,
                action,
                run_id,
                Refusal(
                    409,
                    "acknowledgement_required",
                    f"revision(s) {', '.join(missing)} depend on data: what they send on the "
                    "real data could not all be seen ahead. Acknowledge each (with a reason) to "
                    "approve; they may then send data statements (SELECT, INSERT, UPDATE, "
                    "DELETE) not shown, never a schema change that was not shown",
                    {"data_dependent": missing},
                ),
            )
        statement_pins = ReviewPins.of(review, acks)
        expires = rules.deadline(now, self.settings.approval_ttl_minutes)
        decided = await self.repo.decide(
            run_id,
            now=now,
            run_values={"approved_by": ident.display, "approved_at": now, "expires_at": expires},
            approval={
                "decision": sm.APPROVE,
                "approver": ident.display,
                "approver_role": ident.role,
                "approver_address": ident.address or None,
                "reason": comment,
                "sql_sha256": pins.sql_sha256,
                "file_sha256": pins.files_json(),
                "current_heads": list(pins.heads),
                "expires_at": expires,
                "statements": statement_pins.to_json(),
            },
            log=[
                log_line(
                    run_id,
                    "approved",
                    f"approved by {ident.display} (pinned SQL {pins.sql_sha256[:16]}…, "
                    f"{len(pins.files)} revision file(s), database at "
                    f"{', '.join(pins.heads) or 'base'}); valid until "
                    f"{expires:%Y-%m-%d %H:%M:%S %Z}"
                    + f"; {len(review.statements)} statement fingerprint(s) pinned "
                    + ("(rehearsed)" if review.exact else "(offline render, not exact)")
                    + (f", {len(acks)} acknowledgement(s)" if acks else "")
                    + (f"; comment: {comment}" if comment else ""),
                )
            ],
            audit=[
                self.ctx.event(
                    ident.display,
                    ident.address,
                    action,
                    "approved",
                    {
                        "run_id": run_id,
                        "requested_by": run.requested_by,
                        "sql_sha256": pins.sql_sha256,
                        "heads": list(pins.heads),
                        "files": pins.files_json(),
                        "expires_at": expires.isoformat(),
                        "comment": comment,
                        "role": ident.role,
                        "risk": review.risk,
                        "exact": review.exact,
                        "statements": len(review.statements),
                        "acknowledgements": [a.to_json() for a in acks],
                    },
                )
            ],
        )
        if decided is None:
            return await self._lost_race(ident, action, run_id)
        return await self.runs.get(run_id)

    async def reject(self, run_id: int, ident: Identity, reason: object) -> dict[str, Any]:
        action = "run.reject"
        text, bad = rules.validate_reason(reason, required=True)
        run, approval = await self._load(run_id)
        if bad is not None:
            raise await self._refuse(ident, action, run_id, bad)
        assert text is not None
        now = self.runs.clock()
        facts = RunFacts.of(run, approval)
        refusal = rules.check_reject(
            facts, ident.display, allow_self=self.settings.allow_self_approval, now=now
        )
        if refusal is not None:
            if refusal.code == "expired":
                await self._expired(ident, action, run_id, refusal)
            raise await self._refuse(ident, action, run_id, refusal)
        message = f"rejected by {ident.display}: {text}"
        decided = await self.repo.decide(
            run_id,
            now=now,
            run_values={
                "status": sm.REJECTED,
                "finished_at": now,
                "error": message,
            },
            approval={
                "decision": sm.REJECT,
                "approver": ident.display,
                "approver_role": ident.role,
                "approver_address": ident.address or None,
                "reason": text,
                "sql_sha256": run.sql_sha256,
                "file_sha256": Pins.of_request(run).files_json(),
                "current_heads": run.from_revs,
                "expires_at": None,
            },
            log=[log_line(run_id, "rejected", message)],
            audit=[
                self.ctx.event(
                    ident.display,
                    ident.address,
                    action,
                    "rejected",
                    {
                        "run_id": run_id,
                        "requested_by": run.requested_by,
                        "reason": text,
                        "role": ident.role,
                    },
                )
            ],
        )
        if decided is None:
            return await self._lost_race(ident, action, run_id)
        return await self.runs.get(run_id)

    async def execute(self, run_id: int, ident: Identity) -> dict[str, Any]:
        action = "run.execute"
        run, approval = await self._load(run_id)
        now = self.runs.clock()
        facts = RunFacts.of(run, approval)
        refusal = rules.check_execute(facts, ident.display, now=now)
        if refusal is not None:
            if refusal.code == "expired":
                await self._expired(ident, action, run_id, refusal)
            raise await self._refuse(ident, action, run_id, refusal)
        assert approval is not None
        pins = await self.pins_now(run)
        changes = rules.compare_pins(Pins.of_approval(approval), pins, when="approved")
        if changes:
            raise await self._void(ident, action, run, changes, when="approved")
        try:
            await self.runs.enqueue(
                run_id,
                actor=ident.display,
                address=ident.address or None,
                from_statuses=(sm.AWAITING_APPROVAL,),
                log_message=f"started by {ident.display}: the approval by {approval.approver} "
                "still holds (SQL, revision files and database heads unchanged)",
            )
        except RunError as exc:
            await self._audit_refusal(ident, action, run_id, status_of(exc), exc.code, exc.message)
            raise
        return await self.runs.get(run_id)

    async def _lost_race(self, ident: Identity, action: str, run_id: int) -> dict[str, Any]:
        """Someone decided (or it expired) between our check and our write."""
        run, approval = await self._load(run_id)
        facts = RunFacts.of(run, approval)
        now = self.runs.clock()
        refusal = (
            rules.check_approve(facts, ident.display, allow_self=True, now=now)
            if action == "run.approve"
            else rules.check_reject(facts, ident.display, allow_self=True, now=now)
        ) or Refusal(409, "state", f"run {run_id} was decided by someone else meanwhile")
        raise await self._refuse(ident, action, run_id, refusal)

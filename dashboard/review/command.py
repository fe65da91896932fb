"""`dashboard review`: the review of the pending plan, for CI pipelines.

Exit codes (DESIGN): 0 when no finding reaches `--fail-on` (default `high`), 5 when one
does, 1 when the database is unreachable, 2 on bad configuration or target.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass

from dashboard.review.report import Review
from dashboard.settings import Settings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_FINDINGS = 5
FAIL_ON = ("low", "medium", "high", "never")


@dataclass(frozen=True)
class ReviewArgs:
    direction: str = "upgrade"
    target: str = "heads"
    as_json: bool = False
    fail_on: str = "high"


class BadTarget(Exception):
    """The plan cannot be made (unknown target, bad direction, broken scripts)."""


async def _review(settings: Settings, args: ReviewArgs) -> Review:
    from dashboard.db import create_diagnostics_engine
    from dashboard.migrations.plan import PlanError, make_plan
    from dashboard.migrations.preview import render_preview
    from dashboard.migrations.scripts import ScriptCache
    from dashboard.migrations.status import read_version_table
    from dashboard.review.service import ReviewService
    from dashboard.runs.worker import MigrationWorker
    from dashboard.server.sampler import Sampler
    from dashboard.targets import Target

    url = settings.database_url or ""
    target = Target.from_settings(settings)
    engine = create_diagnostics_engine(url)
    worker = MigrationWorker("dashboard-review")
    try:
        async with engine.connect() as conn:
            read = await conn.run_sync(read_version_table, target)
            await conn.rollback()
        loaded = await asyncio.to_thread(ScriptCache().load, target.script_location)
        if loaded.directory is None or loaded.errors:
            what = "; ".join(f"{e.file}: {e.error}" for e in loaded.errors) or "not loadable"
            raise BadTarget(f"the migration scripts have errors: {what}")
        sd = loaded.directory
        try:
            plan = make_plan(sd, read.current, args.direction, args.target)
        except PlanError as exc:
            raise BadTarget(exc.message) from None
        preview = render_preview(sd, plan, target)
        service = ReviewService(settings, target, url, worker, engine)
        review = await service.build(sd, plan, preview)
        # one sample of the locks on the plan's tables: the sessions in the way right now
        sampler = Sampler(engine, interval_s=settings.sample_interval_s)
        sampler.watch_relations(review.relation_names())
        service.sampler = sampler
        try:
            await sampler.refresh()
        except Exception:  # noqa: BLE001 - the review stands without live conflicts
            service.sampler = None
        return await service.live(review)
    finally:
        await asyncio.to_thread(worker.stop)
        await engine.dispose()


def run_review(args: ReviewArgs) -> int:
    from dashboard.db import describe_error, is_unavailable
    from dashboard.review.report import fails
    from dashboard.review.text import render_text

    if args.fail_on not in FAIL_ON:
        print(
            f"dashboard: --fail-on must be one of {', '.join(FAIL_ON)}, not {args.fail_on!r}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    settings = Settings.from_env(require_database=True)
    try:
        review = asyncio.run(_review(settings, args))
    except BadTarget as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        if is_unavailable(exc) or isinstance(exc, OSError):
            print(f"dashboard: database unreachable: {describe_error(exc)}", file=sys.stderr)
            return EXIT_ERROR
        raise
    if args.as_json:
        print(json.dumps(review.to_json(), indent=2, default=str))
    else:
        print(render_text(review))
    failed = fails(review, args.fail_on)
    if not args.as_json:
        verdict = (
            f"risk {review.risk} reaches --fail-on {args.fail_on}: exit {EXIT_FINDINGS}"
            if failed
            else f"risk {review.risk} is below --fail-on {args.fail_on}: exit 0"
        )
        print(f"\n{verdict}")
    return EXIT_FINDINGS if failed else EXIT_OK

"""The review of a plan (I/O around the pure parts): learn the statements (a rehearsal on a
scratch database, falling back to the offline render), analyse them, add the live context
(table sizes, sessions in the way), and build the statement pins an approval covers.

A rehearsal costs a scratch database and a replay of the history, so its capture is kept
per plan (the revisions, their file hashes, where the plan starts) for `CACHE_TTL_S`; page
refreshes and the live-conflict polling read the sampler's snapshot and never rehearse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard.migrations.plan import Plan
from dashboard.migrations.preview import Preview
from dashboard.review.live import live_conflicts, origins_by_pid, relation_sizes, resolved_names
from dashboard.review.model import Capture
from dashboard.review.rehearsal import drop_leftovers, rehearse
from dashboard.review.report import Jsonable, Review, build_review
from dashboard.review.rules import waivers as read_waivers
from dashboard.review.statements import offline_capture
from dashboard.runs.worker import MigrationWorker
from dashboard.settings import Settings
from dashboard.targets import Target

if TYPE_CHECKING:
    from dashboard.pool.registry import PoolRegistry
    from dashboard.server.sampler import Sampler

log = logging.getLogger(__name__)

CACHE_TTL_S = 600.0
CACHE_SIZE = 16
WATCH_TTL_S = 30.0
FIRST_COVER_WAIT_S = 3.0  # the first view of a plan waits this long at most for its locks

CaptureKey = tuple[str, tuple[str, ...], tuple[tuple[str, str], ...], str]


def capture_key(plan: Plan, server: str) -> CaptureKey:
    return (
        plan.direction,
        tuple(plan.from_heads),
        tuple((s.revision, s.file_sha256) for s in plan.steps),
        server,
    )


def _read_waivers(sd: ScriptDirectory, plan: Plan) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for step in plan.steps:
        script = sd.get_revision(step.revision)
        path = getattr(script, "path", None)
        if not path:
            continue
        try:
            out[step.revision] = read_waivers(Path(path).read_text(encoding="utf-8"))
        except OSError:
            continue
    return out


class ReviewService:
    """Reviews of one target's plans."""

    def __init__(
        self,
        settings: Settings,
        target: Target,
        url: str,
        worker: MigrationWorker,
        engine: AsyncEngine,
    ) -> None:
        self.settings = settings
        self.target = target
        self.url = url
        self.worker = worker
        self.engine = engine  # a small pool on the target (table sizes)
        self.sampler: Sampler | None = None
        self.pools: PoolRegistry | None = None
        self._captures: OrderedDict[CaptureKey, tuple[float, Capture]] = OrderedDict()
        self._inflight: dict[CaptureKey, asyncio.Future[Capture]] = {}
        self._swept = False

    @property
    def rehearsal_server(self) -> str:
        return self.settings.rehearsal_server_url or self.url

    # -- statements ----------------------------------------------------------------------
    async def capture(self, sd: ScriptDirectory, plan: Plan, *, fresh: bool = False) -> Capture:
        """The statements the plan sends: from the cache, or from one rehearsal (concurrent
        callers for the same plan share it)."""
        key = capture_key(plan, self.rehearsal_server)
        hit = self._captures.get(key)
        if hit is not None and not fresh and time.monotonic() - hit[0] < CACHE_TTL_S:
            self._captures.move_to_end(key)
            return hit[1]
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Capture] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._rehearse(sd, plan)
            future.set_result(result)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            self._inflight.pop(key, None)
        self._captures[key] = (time.monotonic(), result)
        while len(self._captures) > CACHE_SIZE:
            self._captures.popitem(last=False)
        return result

    async def _rehearse(self, sd: ScriptDirectory, plan: Plan) -> Capture:
        if not self._swept:
            # scratch databases a killed process left behind (older than an hour)
            self._swept = True
            try:
                dropped = await drop_leftovers(self.rehearsal_server)
                if dropped:
                    log.warning("dropped leftover rehearsal databases: %s", ", ".join(dropped))
            except Exception as exc:  # noqa: BLE001 - best effort
                log.info("could not look for leftover rehearsal databases: %s", exc)
        if not plan.steps:
            return Capture(exact=True, source="rehearsal", revisions=())
        limit = self.settings.rehearsal_timeout_s

        async def bounded() -> Capture:
            # on the worker's loop: a rehearsal that runs too long is cancelled (its scratch
            # database is still dropped) and the review falls back to the offline render
            try:
                return await asyncio.wait_for(
                    rehearse(
                        server_url=self.rehearsal_server,
                        sd=sd,
                        plan=plan,
                        target=self.target,
                        run_env_py=self.settings.run_env_py,
                    ),
                    timeout=limit,
                )
            except TimeoutError:
                capture = offline_capture(sd, plan, self.target)
                why = (
                    f"the rehearsal took longer than {limit:g} s "
                    "(DASHBOARD_REHEARSAL_TIMEOUT_S) and was stopped"
                )
                return replace(
                    capture, note=f"not rehearsed: {why}; {capture.note}", rehearsal_error=why
                )

        return await self.worker.run(bounded)

    # -- the review ----------------------------------------------------------------------
    async def build(
        self, sd: ScriptDirectory, plan: Plan, preview: Preview, *, fresh: bool = False
    ) -> Review:
        """The review without live context (what approvals pin)."""

        started = time.monotonic()
        capture = await self.capture(sd, plan, fresh=fresh)
        waivers = await asyncio.to_thread(_read_waivers, sd, plan)
        review = await asyncio.to_thread(
            lambda: build_review(
                direction=plan.direction,
                target=plan.target,
                from_heads=plan.from_heads,
                to_heads=plan.to_heads,
                capture=capture,
                sql_sha256=preview.sql_sha256,
                messages={s.revision: s.message for s in plan.steps},
                waivers=waivers,
            )
        )
        return replace(review, elapsed_ms=(time.monotonic() - started) * 1000)

    # -- live context --------------------------------------------------------------------
    def watch(self, review: Review) -> None:
        """Ask the sampler to read the locks on the review's relations for a while."""
        if self.sampler is not None:
            self.sampler.watch_relations(review.relation_names(), ttl_s=WATCH_TTL_S)

    async def live(self, review: Review, *, sizes: bool = True) -> Review:
        """The review with the relations' sizes (one query) and the sessions in each
        statement's way, read from the sampler's snapshot: no query per viewer. The first
        view of a plan waits (at most a sample interval) for a cycle that covers its tables."""
        names = review.relation_names()
        relations = None
        relations_error = None
        if sizes and names:
            try:
                relations = await relation_sizes(self.engine, names)
            except Exception as exc:  # the review stands without sizes
                relations_error = f"table sizes could not be read: {type(exc).__name__}: {exc}"
                relations_error = relations_error[:300]
        sampler = self.sampler
        conflicts: list[Sequence[Jsonable]] = [() for _ in review.statements]
        note: str | None = None
        at = None
        if sampler is None:
            note = "live conflicts are not available (no sampler)"
        else:
            self.watch(review)
            snap = sampler.latest
            if snap is None or not snap.covers_relations(names):
                wait_s = min(FIRST_COVER_WAIT_S, sampler.interval_s * 1.5)
                snap = await sampler.wait_for_relations(names, timeout_s=wait_s)
            if snap is None or not snap.covers_relations(names):
                note = "reading the locks on these tables; refreshed with the next sample"
            else:
                origins = origins_by_pid(self.pools)
                resolved = resolved_names(relations or [])
                conflicts = [
                    live_conflicts(s.facts.locks, snap, origins, resolved=resolved)
                    for s in review.statements
                ]
                at = datetime.fromtimestamp(snap.taken_at, UTC)
        return review.with_live(
            conflicts, at=at, note=note, relations=relations, relations_error=relations_error
        )

"""The review of a plan: `/api/review` (DESIGN), and the review panel the confirmation and
approval pages lead with (`templates/review/_panel.html`), refreshed by htmx while the page
is open so its live conflicts stay current. The rehearsal behind a review is cached per
plan (review/service.py); a refresh reads the sampler's last snapshot and never queries
the target per viewer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from dashboard.review.pins import acknowledgeable
from dashboard.review.report import Review
from dashboard.runs.errors import RunError, RunInvalid
from dashboard.runs.service import RunService
from dashboard.web.render import base_context

REFRESH_S = 5


def review_context(review: Review) -> dict[str, Any]:
    """What templates/review/_panel.html needs: the JSON plus acknowledgeable keys."""
    return {
        "review": review.to_json(),
        "review_acks": acknowledgeable(review),
        "review_refresh_s": REFRESH_S,
    }


async def fragment(
    request: Request[Any, Any, Any],
    area: str,
    template: str,
    load: Callable[[], Awaitable[Review]],
    *,
    url: str = "",
) -> Template:
    """A review fragment; a review that cannot be made is said inside it (htmx does not
    swap error answers, so a 4xx would leave "Reviewing…" on the page for good)."""
    ctx = base_context(request, area)
    ctx["review_url"] = url
    try:
        ctx.update(review_context(await load()))
        ctx["review_error"] = ""
    except RunError as exc:
        ctx.update(review=None, review_error=exc.message)
    return Template(template_name=template, context=ctx)


class ReviewController(Controller):
    @get("/api/review", name="api_review")
    async def api_review(
        self,
        runs: NamedDependency[RunService],
        direction: FromQuery[str] = "upgrade",
        target: FromQuery[str] = "heads",
    ) -> dict[str, Any]:
        """The review of the plan `direction` to `target` from where the database stands.
        A target or direction that cannot be planned is a bad request (400)."""
        try:
            review = await runs.reviewed(direction, target)
        except RunInvalid as exc:
            raise RunError(exc.message, code=exc.code, extra=exc.extra) from None
        return review.to_json()

    @get("/review/panel", name="review_panel", include_in_schema=False)
    async def panel(
        self,
        request: Request[Any, Any, Any],
        runs: NamedDependency[RunService],
        direction: FromQuery[str] = "upgrade",
        target: FromQuery[str] = "heads",
    ) -> Template:
        """The review panel of a plan (htmx refresh of the confirmation page)."""
        return await fragment(
            request,
            "migrations",
            "review/_panel.html",
            lambda: runs.reviewed(direction, target),
            url=request.url.path + "?" + request.url.query,
        )

    @get("/review/badge", name="review_badge", include_in_schema=False)
    async def badge(
        self,
        request: Request[Any, Any, Any],
        runs: NamedDependency[RunService],
        direction: FromQuery[str] = "upgrade",
        target: FromQuery[str] = "heads",
    ) -> Template:
        """The risk of the pending plan, for the Migrations page (loaded after the page)."""
        return await fragment(
            request, "migrations", "review/_badge.html", lambda: runs.reviewed(direction, target)
        )

    @get("/runs/{run_id:int}/review", name="run_review_panel", include_in_schema=False)
    async def run_panel(
        self,
        request: Request[Any, Any, Any],
        runs: NamedDependency[RunService],
        run_id: FromPath[int],
    ) -> Template:
        """The review panel of a requested run's plan (htmx refresh of the run page)."""

        async def load() -> Review:
            return await runs.reviewed_run(await runs.record(run_id))

        return await fragment(request, "runs", "review/_panel.html", load, url=request.url.path)

    @get("/api/runs/{run_id:int}/review", name="api_run_review")
    async def api_run_review(
        self, runs: NamedDependency[RunService], run_id: FromPath[int]
    ) -> dict[str, Any]:
        """The review of a requested run's plan, with live conflicts (what an approver sees)."""
        run = await runs.record(run_id)
        return (await runs.reviewed_run(run)).to_json()

"""Page-or-fragment choice and the context every template gets."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.response import Template

from dashboard.auth.guards import identity_of
from dashboard.context import Dashboard
from dashboard.web.deps import provide_dashboard


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return (
        request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"
    )


def banners(dash: Dashboard) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    if dash.settings.auth_mode == "none":
        out.append(
            {
                "level": "warn",
                "text": "Authentication is disabled (demo mode, loopback only): "
                "everyone here acts as admin.",
            }
        )
    for probe in (dash.health, dash.state_health):  # the state's: when it is another database
        if probe is not None and probe.ok is False:
            out.append({"level": "error", "text": probe.banner()})
    return out


def base_context(request: Request[Any, Any, Any], active: str) -> dict[str, Any]:
    dash = provide_dashboard(request)
    return {
        "dash": dash,
        "identity": identity_of(request),
        "banners": banners(dash),
        "active": active,
        "base": request.scope.get("root_path", "").rstrip("/"),
    }


def render(
    request: Request[Any, Any, Any],
    area: str,
    context: dict[str, Any],
    *,
    active: str | None = None,
) -> Template:
    """Full page on a normal request; the `_panel.html` fragment for an htmx refresh."""
    ctx = base_context(request, active or area)
    ctx.update(context)
    name = f"{area}/_panel.html" if is_htmx(request) else f"{area}/index.html"
    return Template(template_name=name, context=ctx)

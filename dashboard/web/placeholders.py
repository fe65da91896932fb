"""Pages whose areas are not built yet say so plainly instead of showing nothing.

Each area deletes its handler here when its real controller lands.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.response import Template

from dashboard.web.render import base_context


def _placeholder(request: Request[Any, Any, Any], area: str, title: str, what: str) -> Template:
    ctx = base_context(request, area)
    ctx.update({"title": title, "what": what})
    return Template(template_name="common/not_yet.html", context=ctx)


@get("/audit", name="audit", include_in_schema=False)
async def audit_page(request: Request[Any, Any, Any]) -> Template:
    return _placeholder(request, "audit", "Audit", "the audit log")


PLACEHOLDER_HANDLERS = [audit_page]

"""Pages whose areas are not built yet say so plainly instead of showing nothing.

Each area deletes its handler here when its real controller lands. (None left: the
audit page is `dashboard/web/audit.py`.)
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.response import Template

from dashboard.web.render import base_context


def _placeholder(request: Request[Any, Any, Any], area: str, title: str, what: str) -> Template:
    ctx = base_context(request, area)
    ctx.update({"title": title, "what": what})
    return Template(template_name="common/not_yet.html", context=ctx)


PLACEHOLDER_HANDLERS: list[Any] = []

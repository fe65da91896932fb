"""Mounting the dashboard into a Litestar host application.

Starlette/FastAPI: `app.mount("/ops", create_app(engines={"main": engine}))` just works
(Starlette sets the ASGI `root_path`). Litestar's `is_mount` handlers strip the prefix
from `path` but leave `root_path` alone, so the dashboard would build its links without
the prefix; `litestar_mount` adds it.

    from dashboard import create_app
    from dashboard.pool.mount import litestar_mount

    ops = create_app(engines={"main": engine})
    app = Litestar(route_handlers=[..., litestar_mount(ops, "/ops")],
                   lifespan=[lambda app: ops.lifespan()])
"""

from __future__ import annotations

from litestar import Litestar
from litestar.handlers import ASGIRouteHandler, asgi
from litestar.types import Receive, Scope, Send


def litestar_mount(dashboard_app: Litestar, path: str = "/ops") -> ASGIRouteHandler:
    prefix = "/" + path.strip("/")

    @asgi(prefix, is_mount=True, copy_scope=True, name="dashboard_mount")
    async def dashboard_mount(scope: Scope, receive: Receive, send: Send) -> None:
        scope["root_path"] = scope.get("root_path", "").rstrip("/") + prefix
        await dashboard_app(scope, receive, send)

    return dashboard_mount

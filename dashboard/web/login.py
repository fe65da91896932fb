"""Login and logout for `password` mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import Body, FromQuery
from litestar.response import Redirect, Template

from dashboard.auth import users
from dashboard.auth.identity import peer_address
from dashboard.auth.ratelimit import LoginRateLimiter
from dashboard.web.render import base_context, dashboard_of


@dataclass
class LoginForm:
    username: str = ""
    password: str = ""
    next: str = "/"


def safe_next(target: str) -> str:
    """Only same-site relative paths: never redirect to another host after login."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def limiter_of(request: Request[Any, Any, Any]) -> LoginRateLimiter:
    dash = dashboard_of(request)
    lim = dash.extras.get("login_limiter")
    if lim is None:
        lim = dash.extras["login_limiter"] = LoginRateLimiter()
    assert isinstance(lim, LoginRateLimiter)
    return lim


async def audit(
    request: Request[Any, Any, Any], actor: str, action: str, outcome: str, detail: dict[str, Any]
) -> None:
    hook = dashboard_of(request).extras.get("audit_hook")
    if hook is not None:
        await hook(
            actor=actor,
            address=peer_address(request),
            action=action,
            target=None,
            outcome=outcome,
            detail=detail,
        )


class LoginController(Controller):
    opt = {"public": True}

    def _require_password_mode(self, request: Request[Any, Any, Any]) -> None:
        if dashboard_of(request).settings.auth_mode != "password":
            raise NotFoundException(detail="login is only used in DASHBOARD_AUTH_MODE=password")

    def _form(
        self, request: Request[Any, Any, Any], error: str = "", next_: str = "/", username: str = ""
    ) -> Template:
        ctx = base_context(request, "login")
        ctx.update({"error": error, "next": next_, "username": username})
        return Template(template_name="auth/login.html", context=ctx)

    @get("/login", name="login")
    async def form(
        self,
        request: Request[Any, Any, Any],
        next: FromQuery[str] = "/",  # noqa: A002
    ) -> Template:
        self._require_password_mode(request)
        return self._form(request, next_=safe_next(next))

    @post("/login", name="login_submit", status_code=200)
    async def submit(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Template | Redirect:
        self._require_password_mode(request)
        dash = dashboard_of(request)
        address = peer_address(request)
        name = data.username.strip()[:64]
        limiter = limiter_of(request)
        wait = limiter.retry_after(name, address)
        if wait > 0:
            await audit(request, name or "anonymous", "login", "denied", {"reason": "rate limited"})
            raise HTTPException(
                status_code=429,
                detail=f"too many failed logins; try again in {int(wait) + 1} s",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        if (
            not name
            or not data.password
            or not users.verify(dash.settings.users_file, name, data.password)
        ):
            limiter.failed(name, address)
            await audit(request, name or "anonymous", "login", "failed", {})
            resp = self._form(request, "Wrong user name or password.", safe_next(data.next), name)
            resp.status_code = 401
            return resp
        limiter.succeeded(name, address)
        request.clear_session()
        request.set_session({"user": name})
        await audit(request, name, "login", "ok", {})
        return Redirect(path=request.scope.get("root_path", "") + safe_next(data.next))

    @post("/logout", name="logout", status_code=200)
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        session = request.session if "session" in request.scope else {}
        user = session.get("user") if isinstance(session, dict) else None
        request.clear_session()
        if user:
            await audit(request, str(user), "logout", "ok", {})
        return Redirect(path=request.scope.get("root_path", "") + "/login")

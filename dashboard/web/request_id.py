"""A request id for every HTTP request: honoured from a valid incoming `X-Request-ID` (a load
balancer's or proxy's), else a new one; returned in the response's `X-Request-ID` header and
set in `dashboard.logs.REQUEST_ID` while the request is served, so every log line of the
request (the dashboard's, uvicorn's error and access lines) carries it.

It wraps the whole application (`wrap()`), outside Litestar's routing: a 404 for an unknown
path or a 405 gets its id too."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from dashboard.logs import REQUEST_ID

HEADER = "x-request-id"
_HEADER_BYTES = HEADER.encode("latin-1")
# What an incoming id may look like: a UUID, a hex or base64url token, a proxy's
# `host-12345` style. Anything else (too long, spaces, control characters) is replaced, so a
# client cannot write arbitrary text into the log.
VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")

Headers = Iterable[tuple[bytes, bytes]] | None


def new_id() -> str:
    return secrets.token_hex(8)


def valid(value: str | None) -> bool:
    return value is not None and VALID.fullmatch(value) is not None


def incoming(headers: Headers) -> str | None:
    """The request's own X-Request-ID when there is exactly one and it is valid."""
    found = [
        bytes(v).decode("latin-1") for k, v in headers or () if bytes(k).lower() == _HEADER_BYTES
    ]
    if len(found) == 1 and valid(found[0].strip()):
        return found[0].strip()
    return None


def choose(headers: Headers) -> str:
    return incoming(headers) or new_id()


class RequestIdMiddleware:
    """Plain ASGI middleware (http only; lifespan and websockets pass through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        request_id = choose(scope.get("headers"))
        scope.setdefault("state", {})["request_id"] = request_id
        header = (_HEADER_BYTES, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", ())
                    if bytes(k).lower() != _HEADER_BYTES
                ]
                headers.append(header)
                message["headers"] = headers
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


def request_id_of(scope: Mapping[str, Any]) -> str | None:
    """The id of the request `scope` belongs to (for pages that quote it)."""
    state = scope.get("state") or {}
    value = state.get("request_id")
    return value if isinstance(value, str) else REQUEST_ID.get()

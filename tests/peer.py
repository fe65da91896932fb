"""Litestar's test client always reports the peer as "testclient". Proxy-mode identity is
only honoured from trusted addresses, so tests that play a proxy wrap the app to present
a real peer address (the ASGI `client` of the scope); everything else is the real app."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient


class PeerAddress:
    def __init__(self, app: Litestar, address: str) -> None:
        self.app = app
        self.address = address
        # the test client reaches into these
        self.state = app.state

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            scope = dict(scope)
            scope["client"] = (self.address, 40000)
        await self.app(scope, receive, send)


def client_from(
    app: Litestar, address: str = "127.0.0.1", **kw: Any
) -> AsyncTestClient[PeerAddress]:
    """An AsyncTestClient whose requests arrive from `address`."""
    return AsyncTestClient(PeerAddress(app, address), **kw)


Client = AsyncTestClient[Any]
"""Any Litestar test client: `AsyncTestClient(app)` or `client_from(app, ...)`."""


async def csrf_token(client: Client, path: str = "/healthz") -> str:
    """GET something to receive the CSRF cookie; return the value to send as x-csrftoken."""
    await client.get(path)
    token = client.cookies.get("csrftoken")
    assert token, "no csrftoken cookie was set"
    return str(token)

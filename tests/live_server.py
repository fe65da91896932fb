"""Serve an ASGI app on a free loopback port in a background thread, for browser tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
"""Any ASGI application: a Litestar app (`create_app(...)`), a FastAPI app, a wrapper."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(app: ASGIApp, *, timeout_s: float = 20.0) -> Iterator[str]:
    """Yield the base URL (http://127.0.0.1:PORT) while `app` is being served."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"live-server-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("live server failed to start")
        if time.monotonic() > deadline:
            raise TimeoutError("live server did not start in time")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)

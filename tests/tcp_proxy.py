"""A tiny TCP proxy in front of the test PostgreSQL, so a test can make the database
'go away' and 'come back' without touching the real server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any

from sqlalchemy.engine import make_url


class PgProxy:
    def __init__(self, server_url: str) -> None:
        u = make_url(server_url)
        socket_dir = u.query.get("host")
        self.unix_path = (
            f"{socket_dir}/.s.PGSQL.{u.port or 5432}" if isinstance(socket_dir, str) else None
        )
        self.target_host = u.host or "127.0.0.1"
        self.target_port = u.port or 5432
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                w.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        if self.unix_path:
            sr, sw = await asyncio.open_unix_connection(self.unix_path)
        else:
            sr, sw = await asyncio.open_connection(self.target_host, self.target_port)
        for t in (self._pipe(cr, sw), self._pipe(sr, cw)):
            task = asyncio.create_task(t)
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for t in list(self._pipes):
            t.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"


class ThreadedPgProxy:
    """PgProxy on its own event loop in a thread: the app under test (which Litestar's
    test client runs in another thread) reaches it even while the test's loop is blocked."""

    def __init__(self, server_url: str) -> None:
        self.proxy = PgProxy(server_url)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self) -> None:
        self._call(self.proxy.start())

    def stop(self) -> None:
        self._call(self.proxy.stop())

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def url(self, database: str) -> str:
        return self.proxy.url(database)

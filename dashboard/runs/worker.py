"""The migration worker: one thread with its own event loop, where every piece of
Alembic-driven Python runs (a revision's upgrade(), an offline SQL render).

`AsyncConnection.run_sync` runs a revision's Python in a greenlet on the thread of the
loop that owns the connection: on the serving loop, a revision's backfill loop would
freeze every page. Here the serving loop only awaits results.

One thread, not a pool: Alembic's `op` and `context` proxies are module globals. On one
loop, an offline render (synchronous, with its proxies saved and restored) can only run
while a migration waits on the database, exactly as on a single-threaded server; two
threads could swap each other's proxies mid-statement.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import ParamSpec, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")


# While the worker computes, the serving thread waits for the GIL at most this long per
# hand-over (CPython's default is 5 ms: a request that blocks on I/O a dozen times would
# wait a dozen times that for a busy revision to let go).
# Measured with bench/bench_responsive.py (a revision computing in Python for 6 s):
# /healthz p99 67 ms at CPython's default 5 ms, 22 ms at 0.5 ms; nice 10 trims the worst case.
BUSY_SWITCH_INTERVAL_S = 0.0005
WORKER_NICE = 10


class MigrationWorker:
    def __init__(self, name: str = "dashboard-migrate") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self._busy = 0
        self._idle_interval = sys.getswitchinterval()

    def _enter(self) -> None:
        with self._guard:
            if self._busy == 0:
                self._idle_interval = sys.getswitchinterval()
                sys.setswitchinterval(min(self._idle_interval, BUSY_SWITCH_INTERVAL_S))
            self._busy += 1

    def _leave(self) -> None:
        with self._guard:
            self._busy -= 1
            if self._busy == 0:
                sys.setswitchinterval(self._idle_interval)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The worker's loop, started on first use."""
        with self._guard:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                ready = threading.Event()
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._main, args=(loop, ready), name=self.name, daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def _main(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        lower_priority()
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def on_worker(self) -> bool:
        return threading.current_thread() is self._thread

    async def run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kw: P.kwargs) -> T:
        """Await coroutine function `fn` on the worker's loop, from any other loop."""

        async def call() -> T:
            return await fn(*args, **kw)

        self._enter()
        try:
            future: Future[T] = asyncio.run_coroutine_threadsafe(call(), self.loop)
            return await asyncio.wrap_future(future)
        finally:
            self._leave()

    async def call(self, fn: Callable[P, T], *args: P.args, **kw: P.kwargs) -> T:
        """Run synchronous `fn` on the worker's loop (between a migration's awaits)."""

        async def call() -> T:
            return fn(*args, **kw)

        return await self.run(call)

    def stop(self, timeout_s: float = 15.0) -> None:
        with self._guard:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        if thread.is_alive():
            log.warning("the migration worker did not stop within %.0f s", timeout_s)


def lower_priority() -> None:
    """The worker's thread yields the CPU to the serving thread when both want it
    (Linux: nice applies per thread). Best effort."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
    except (OSError, AttributeError):
        pass


def call_on(loop: asyncio.AbstractEventLoop, fn: Callable[[], Awaitable[T]]) -> Future[T]:
    """Schedule coroutine function `fn` on `loop` (the serving loop, from the worker)."""

    async def call() -> T:
        return await fn()

    return asyncio.run_coroutine_threadsafe(call(), loop)

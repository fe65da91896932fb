"""Wait for a condition instead of sleeping a fixed time.

    from tests.waiting import wait_until, wait_until_async

    body = await wait_until_async(long_query_listed, what="the pg_sleep session in long_running")
    wait_until(lambda: worker.done, timeout_s=5, what="the worker to finish")

The predicate is called until it returns something truthy, which is returned (so a
predicate can hand back what it found: a response body, a row). It is called at least once,
and once more at the deadline; between calls the wait is `interval_s`. When the deadline
passes, `WaitTimeout` (an AssertionError, so pytest reports it as a failed assertion) names
what was waited for, how long, how many checks, and the last value or exception seen.

Exceptions from the predicate propagate at once, except those listed in `ignoring`, which
count as "not yet" (e.g. `ignoring=(ConnectionRefusedError,)` while a server starts).

For the opposite question -- "this must NOT happen within a while" -- use `holds_for` /
`holds_for_async`: they check repeatedly for the whole period and fail at the first check
that is falsy. (A positive, deterministic check is better still when one exists.)
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import linecache
import time
import types
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_TIMEOUT_S",
    "WaitTimeout",
    "holds_for",
    "holds_for_async",
    "wait_until",
    "wait_until_async",
]

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_INTERVAL_S = 0.05
_NO_EXCEPTIONS: tuple[type[BaseException], ...] = ()


class WaitTimeout(AssertionError):
    """The condition did not become true before the deadline."""


def describe(predicate: Callable[..., object]) -> str:
    """A readable name for a predicate: its docstring's first line, the source text of a
    lambda, else its qualified name."""
    if inspect.isfunction(predicate) or inspect.ismethod(predicate):
        doc = predicate.__doc__
        if doc and doc.strip():
            return inspect.cleandoc(doc).splitlines()[0]
    name: str = getattr(predicate, "__qualname__", None) or repr(predicate)
    if inspect.isfunction(predicate) and predicate.__name__ == "<lambda>":
        return _lambda_source(predicate) or name
    return name


def _lambda_source(fn: types.FunctionType) -> str | None:
    """`lambda: ...` as written, found by its line in its module's source."""
    code = fn.__code__
    source = "".join(linecache.getlines(code.co_filename))
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    found = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Lambda) and node.lineno == code.co_firstlineno
    ]
    if len(found) != 1:
        return None
    segment = ast.get_source_segment(source, found[0])
    return " ".join(segment.split()) if segment else None


def _limit(text: str, n: int = 300) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


class _Attempts:
    """Deadline and bookkeeping shared by the sync and async loops."""

    def __init__(
        self,
        predicate: Callable[..., object],
        what: str | None,
        timeout_s: float,
        interval_s: float,
    ) -> None:
        if timeout_s < 0 or interval_s <= 0:
            raise ValueError("timeout_s must be >= 0 and interval_s > 0")
        self.predicate = predicate
        self.what = what
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.count = 0
        self.last: str = "nothing (never checked)"

    def saw_value(self, value: object) -> None:
        self.count += 1
        self.last = "value " + _limit(repr(value))

    def saw_error(self, exc: BaseException) -> None:
        self.count += 1
        self.last = "exception " + _limit(f"{type(exc).__name__}: {exc}")

    def pause(self) -> float | None:
        """Seconds to sleep before the next check, or None when the time is up."""
        now = time.monotonic()
        if now >= self.deadline:
            return None
        return min(self.interval_s, self.deadline - now)

    def timeout(self) -> WaitTimeout:
        what = self.what or describe(self.predicate)
        waited = time.monotonic() - self.started
        return WaitTimeout(
            f"timed out after {waited:.2f}s (limit {self.timeout_s:g}s, {self.count} checks) "
            f"waiting for {what}; last saw {self.last}"
        )

    def broken(self, value: object) -> WaitTimeout:
        what = self.what or describe(self.predicate)
        waited = time.monotonic() - self.started
        return WaitTimeout(
            f"{what} stopped holding after {waited:.2f}s (should hold for {self.timeout_s:g}s); "
            f"check {self.count} saw {_limit(repr(value))}"
        )


def _refuse_awaitable(value: object, instead: str) -> None:
    # An un-awaited coroutine is truthy: the sync variants would "succeed" at once.
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise TypeError(f"the predicate returned an awaitable: use {instead}")


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = DEFAULT_INTERVAL_S,
    what: str | None = None,
    ignoring: tuple[type[BaseException], ...] = _NO_EXCEPTIONS,
) -> T:
    """Call `predicate` until it returns a truthy value and return that value; raise
    `WaitTimeout` naming `what` (default: the predicate's docstring, source or name) when
    `timeout_s` passes first. Not for use on an event loop's thread (it blocks): use
    `wait_until_async` there."""
    attempts = _Attempts(predicate, what, timeout_s, interval_s)
    while True:
        try:
            value = predicate()
        except ignoring as exc:
            attempts.saw_error(exc)
        else:
            _refuse_awaitable(value, "wait_until_async")
            attempts.saw_value(value)
            if value:
                return value
        pause = attempts.pause()
        if pause is None:
            raise attempts.timeout()
        time.sleep(pause)


async def wait_until_async(
    predicate: Callable[[], Awaitable[T | None]],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = DEFAULT_INTERVAL_S,
    what: str | None = None,
    ignoring: tuple[type[BaseException], ...] = _NO_EXCEPTIONS,
) -> T:
    """`wait_until` for an async predicate (`async def ready() -> bool: ...`), sleeping
    with `asyncio.sleep` between checks so the event loop keeps running. A check that
    hangs is not interrupted: bound it yourself (e.g. `asyncio.timeout`) if it can."""
    attempts = _Attempts(predicate, what, timeout_s, interval_s)
    while True:
        try:
            value = await predicate()
        except ignoring as exc:
            attempts.saw_error(exc)
        else:
            attempts.saw_value(value)
            if value:
                return value
        pause = attempts.pause()
        if pause is None:
            raise attempts.timeout()
        await asyncio.sleep(pause)


def holds_for(
    predicate: Callable[[], object],
    for_s: float,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    what: str | None = None,
) -> None:
    """Check that `predicate` stays truthy for `for_s` seconds (checked every `interval_s`,
    and once more at the end); raise `WaitTimeout` at the first falsy check."""
    attempts = _Attempts(predicate, what, for_s, interval_s)
    while True:
        value = predicate()
        _refuse_awaitable(value, "holds_for_async")
        attempts.saw_value(value)
        if not value:
            raise attempts.broken(value)
        pause = attempts.pause()
        if pause is None:
            return
        time.sleep(pause)


async def holds_for_async(
    predicate: Callable[[], Awaitable[object]],
    for_s: float,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    what: str | None = None,
) -> None:
    """`holds_for` for an async predicate."""
    attempts = _Attempts(predicate, what, for_s, interval_s)
    while True:
        value = await predicate()
        attempts.saw_value(value)
        if not value:
            raise attempts.broken(value)
        pause = attempts.pause()
        if pause is None:
            return
        await asyncio.sleep(pause)

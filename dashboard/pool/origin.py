"""Where a checkout came from: captured cheaply on the hot path, explained lazily.

At checkout we keep only `(code object, last instruction offset)` pairs, starting at the
first frame outside SQLAlchemy, asyncio, greenlet, contextlib and this package, and at
most `keep` of them. The walk itself is a small C extension (`_framewalk.c`, built by
`pip install` where a compiler exists) with the same walk in Python as the fallback.
Line numbers, file names and the "origin" choice are worked out only when someone looks
(page, JSON, freeze-frame).

Under an `AsyncEngine` the pool runs inside a greenlet started by SQLAlchemy's
`greenlet_spawn`; the caller's coroutine frames live in the parent greenlet, so the walk
jumps straight there (skipping the sync SQLAlchemy frames, which are never the origin).
"""

from __future__ import annotations

import asyncio
import asyncio.events
import contextlib
import os
import sys
import sysconfig
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

import greenlet
import sqlalchemy

# A captured stack, flat: (code, lasti, code, lasti, ...), innermost first. Flat because
# one tuple per frame would be built on every checkout of the host's pool.
RawStack = tuple[Any, ...]

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_DASHBOARD_DIR = os.path.dirname(_PKG_DIR)

# Frames from these never count as the origin of a checkout.
_HIDDEN_PREFIXES: tuple[str, ...] = tuple(
    p
    for p in (
        os.path.dirname(sqlalchemy.__file__ or ""),
        os.path.dirname(asyncio.__file__ or ""),
        os.path.dirname(greenlet.__file__ or ""),
        _PKG_DIR,
    )
    if p
)
_HIDDEN_FILES = {contextlib.__file__, "<frozen importlib._bootstrap>"}

# The event loop's callback runner: nothing above it is interesting.
_STOP_CODE = asyncio.events.Handle._run.__code__

HIDDEN = 2  # never the origin, not kept
SOFT = 1  # dashboard code: kept, but the origin only when nothing else is found
USER = 0

# Keyed by file name: str hashes are cached, code-object hashes are not (and are slow).
_kind_by_file: dict[str, int] = {}


def _classify(filename: str) -> int:
    if filename in _HIDDEN_FILES or filename.startswith(_HIDDEN_PREFIXES):
        kind = HIDDEN
    elif filename.startswith(_DASHBOARD_DIR + os.sep):
        kind = SOFT
    else:
        kind = USER
    _kind_by_file[filename] = kind
    return kind


_getcurrent = greenlet.getcurrent
_getframe = sys._getframe
_current_task = asyncio.current_task
_weakref = weakref.ref
_WALK_LIMIT = 80  # frames searched for the first non-library one
_MAX_KEEP = 64  # as in _framewalk.c


def _walk_py(
    frame: FrameType | None,
    keep: int,
    kinds: dict[str, int],
    classify: Callable[[str], int],
    stop: CodeType,
    limit: int,
) -> RawStack:
    """The walk of `_framewalk.walk` in Python (its contract is in _framewalk.c): used
    when the C extension was not built, and in the tests as the reference."""
    # 1. skip library frames (SQLAlchemy, asyncio, this package, ...)
    while True:
        if frame is None or limit <= 0:
            return ()
        code = frame.f_code
        kind = kinds.get(code.co_filename)
        if kind is None:
            kind = classify(code.co_filename)
        if code is stop:
            return ()
        if kind != HIDDEN:
            break
        frame = frame.f_back
        limit -= 1
    # 2. keep the origin and its callers
    keep = min(keep, _MAX_KEEP)
    out: list[Any] = []
    while frame is not None and keep > 0:
        code = frame.f_code
        if code is stop:
            break
        out.append(code)
        out.append(frame.f_lasti)
        frame = frame.f_back
        keep -= 1
    return tuple(out)


_PROVIDER_ATTR = "__sqlalchemy_greenlet_provider__"


def _capture_py(keep: int, /) -> RawStack:
    current = _getcurrent()
    parent = current.parent
    if parent is not None and getattr(current, _PROVIDER_ATTR, False):
        frame = parent.gr_frame
    else:
        frame = _getframe(1)
    return _walk_py(frame, keep, _kind_by_file, _classify, _STOP_CODE, _WALK_LIMIT)


try:  # built by `pip install` where a C compiler exists (setup.py, optional)
    from dashboard.pool import _framewalk
except ImportError:  # pragma: no cover - exercised by installs without a compiler
    _framewalk = None  # type: ignore[assignment]

if _framewalk is not None:
    _framewalk.configure(
        _getcurrent,
        greenlet.greenlet,
        _kind_by_file,
        _classify,
        _STOP_CODE,
        _WALK_LIMIT,
        _PROVIDER_ATTR,
        asyncio.current_task,
    )

WALKER = "c" if _framewalk is not None else "python"

# `capture(keep)`: the caller's stack from the first non-library frame outward, at most
# `keep` frames, flat. On the checkout path of every connection: one C call where the
# extension is built. Inside a greenlet (SQLAlchemy's asyncio bridge) the walk starts in
# the parent greenlet, where the caller's coroutines are; otherwise at the caller.
capture: Callable[[int], RawStack] = _framewalk.capture if _framewalk is not None else _capture_py


def _checkout_entry_py(seq: int, now: float, wait: float, depth: int, /) -> tuple[Any, ...]:
    task = _current_task()
    return (seq, now, wait, _weakref(task) if task is not None else None, None, _capture_py(depth))


# `checkout_entry(seq, now, wait, depth)`: one asyncio checkout's ledger entry
# (instrument.RawEntry: seq, checkout time, wait, weak reference to the task, thread (None),
# stack of `depth` frames), in one call.
checkout_entry: Callable[[int, float, float, int], tuple[Any, ...]] = (
    _framewalk.checkout_entry if _framewalk is not None else _checkout_entry_py
)


@dataclass(frozen=True, slots=True)
class Frame:
    filename: str
    lineno: int
    function: str

    @property
    def short_file(self) -> str:
        return short_path(self.filename)

    def __str__(self) -> str:
        return f"{self.short_file}:{self.lineno} in {self.function}"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.short_file,
            "path": self.filename,
            "line": self.lineno,
            "function": self.function,
        }


def line_of(code: CodeType, lasti: int) -> int:
    if lasti >= 0:
        for start, end, line in code.co_lines():
            if start <= lasti < end and line is not None:
                return line
    return code.co_firstlineno


def resolve(raw: RawStack) -> list[Frame]:
    """Innermost first."""
    return [
        Frame(code.co_filename, line_of(code, lasti), code.co_qualname)
        for code, lasti in zip(raw[::2], raw[1::2], strict=True)
    ]


def origin_of(frames: list[Frame]) -> Frame | None:
    """First user frame; the first dashboard frame when the checkout came from the dashboard."""
    for f in frames:
        if _kind_by_file.get(f.filename, USER) == USER:
            return f
    return frames[0] if frames else None


_STDLIB = sysconfig.get_paths()["stdlib"] + os.sep


def short_path(path: str) -> str:
    """sqlalchemy/engine/base.py, asyncio/tasks.py, app/db.py (relative to the working
    directory), else the path as it is."""
    marker = f"{os.sep}site-packages{os.sep}"
    if marker in path:
        return path.split(marker, 1)[1]
    if path.startswith(_STDLIB):
        return path[len(_STDLIB) :]
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


# --- the asyncio task that holds a connection ---------------------------------------


def _awaited_frames(task: asyncio.Task[Any], limit: int = 80) -> list[FrameType]:
    """The task's suspended coroutine chain, outermost first."""
    frames: list[FrameType] = []
    obj: Any = task.get_coro()
    while obj is not None and limit:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
        limit -= 1
    return frames


def request_of(task: asyncio.Task[Any] | None) -> str | None:
    """`GET /orders/7` when the task is serving an ASGI request (any framework).

    Looks for the ASGI `scope` argument in the task's suspended coroutine frames; cheap
    enough for a page view, far too slow for every checkout, hence lazy.
    """
    if task is None or task.done():
        return None
    try:
        for frame in _awaited_frames(task):
            scope = frame.f_locals.get("scope")
            if isinstance(scope, dict) and scope.get("type") in ("http", "websocket"):
                method = scope.get("method", "WS")
                path = str(scope.get("path", ""))
                return f"{method} {path}"[:300]
    except Exception:
        return None
    return None


def holder_now(task: asyncio.Task[Any] | None, keep: int = 20) -> list[Frame]:
    """Where the holding task is suspended right now, innermost first."""
    if task is None or task.done():
        return []
    try:
        frames = _awaited_frames(task)
    except Exception:
        return []
    out = [Frame(f.f_code.co_filename, f.f_lineno or 0, f.f_code.co_qualname) for f in frames]
    out.reverse()
    return out[:keep]


def live_origin(task: asyncio.Task[Any] | None) -> Frame | None:
    """The first user frame of where the holding task is suspended now: the fallback origin
    for checkouts whose stack was not captured (taken while the pool was idle)."""
    for f in holder_now(task, keep=80):
        kind = _kind_by_file.get(f.filename)
        if kind is None:
            kind = _classify(f.filename)
        if kind == USER:
            return f
    return None

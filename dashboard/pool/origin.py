"""Where a checkout came from: captured cheaply on the hot path, explained lazily.

At checkout we keep only `(code object, last instruction offset)` pairs, starting at the
first frame outside SQLAlchemy, asyncio, greenlet, contextlib and this package, and at
most `keep` of them. Line numbers, file names and the "origin" choice are worked out
only when someone looks (page, JSON, freeze-frame).

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
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

import greenlet
import sqlalchemy

RawFrame = tuple[CodeType, int]

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


def capture(keep: int = 12, limit: int = 80) -> tuple[RawFrame, ...]:
    """The caller's stack from the first non-library frame outward, at most `keep` frames.

    On the checkout path of every connection: kept to a minimum of attribute lookups.
    Inside a greenlet (SQLAlchemy's asyncio bridge) the walk starts in the parent
    greenlet, where the caller's coroutines are; otherwise at the caller.
    """
    current = _getcurrent()
    frame: FrameType | None
    if getattr(current, "__sqlalchemy_greenlet_provider__", False) and current.parent:
        frame = current.parent.gr_frame
    else:
        frame = _getframe(1)
    kinds = _kind_by_file
    # 1. skip library frames (SQLAlchemy, asyncio, this package, ...)
    while frame is not None and limit:
        code = frame.f_code
        kind = kinds.get(code.co_filename)
        if kind is None:
            kind = _classify(code.co_filename)
        if kind != HIDDEN:
            break
        if code is _STOP_CODE:
            return ()
        frame = frame.f_back
        limit -= 1
    # 2. keep the origin and its callers
    out: list[RawFrame] = []
    while frame is not None and keep:
        code = frame.f_code
        if code is _STOP_CODE:
            break
        out.append((code, frame.f_lasti))
        frame = frame.f_back
        keep -= 1
    return tuple(out)


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


def resolve(raw: tuple[RawFrame, ...]) -> list[Frame]:
    """Innermost first."""
    return [Frame(code.co_filename, line_of(code, lasti), code.co_qualname) for code, lasti in raw]


def origin_of(frames: list[Frame]) -> Frame | None:
    """First user frame; the first dashboard frame when the checkout came from the dashboard."""
    for f in frames:
        if _kind_by_file.get(f.filename, USER) == USER:
            return f
    return frames[0] if frames else None


def short_path(path: str) -> str:
    marker = f"{os.sep}site-packages{os.sep}"
    if marker in path:
        return path.split(marker, 1)[1]
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

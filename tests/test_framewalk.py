"""The checkout stack walk: the C extension and the pure-Python fallback agree, frame for
frame, on every path through the walk (skip, keep, stop, limit, nothing found).

The C walker is what keeps the instrumentation inside its overhead target
(bench/bench_pool_overhead.py); an install without a compiler silently falls back to
Python, so CI insists that the extension was built.
"""

from __future__ import annotations

import asyncio
import os
import sys
from types import FrameType
from typing import Any

import greenlet
import pytest
from sqlalchemy.util import greenlet_spawn

from dashboard.pool import origin

THIS_FILE = __file__


def _need_c() -> Any:
    if origin._framewalk is None:
        if os.environ.get("CI"):
            pytest.fail(
                "dashboard/pool/_framewalk.c was not built (pip install needs a C compiler)"
            )
        pytest.skip("C stack walker not built on this machine; the Python fallback is in use")
    return origin._framewalk.walk


def _both(frame: FrameType | None, keep: int, kinds: dict[str, int], stop: Any, limit: int) -> Any:
    walk_c = _need_c()

    def classify(filename: str) -> int:
        return origin._classify(filename) if filename not in kinds else kinds[filename]

    # separate copies: classify() fills `kinds` as it goes
    got_c = walk_c(frame, keep, dict(kinds), classify, stop, limit)
    got_py = origin._walk_py(frame, keep, dict(kinds), classify, stop, limit)
    assert got_c == got_py
    return got_c


def _nested(depth: int) -> FrameType:
    if depth == 0:
        return sys._getframe()
    return _nested(depth - 1)


def test_c_walker_is_in_use_in_ci() -> None:
    _need_c()
    assert origin.WALKER == "c"
    assert origin.capture is origin._framewalk.capture


def test_c_capture_matches_python_capture_from_the_caller() -> None:
    _need_c()

    def from_here() -> tuple[Any, Any]:
        return origin.capture(4), origin._capture_py(4)  # one line: same line numbers

    got_c, got_py = _nested_call(from_here, 2)
    assert origin.resolve(got_c) == origin.resolve(got_py)
    assert [f.function for f in origin.resolve(got_c)][:2] == [
        "test_c_capture_matches_python_capture_from_the_caller.<locals>.from_here",
        "_nested_call",
    ]
    assert origin.capture(0) == () == origin._capture_py(0)


def _nested_call(fn: Any, depth: int) -> Any:
    return fn() if depth == 0 else _nested_call(fn, depth - 1)


def test_keeps_innermost_user_frames_flat() -> None:
    frame = _nested(3)
    got = _both(frame, 3, {}, origin._STOP_CODE, 80)
    frames = origin.resolve(got)
    assert [f.function for f in frames] == ["_nested"] * 3
    assert all(f.filename == THIS_FILE for f in frames)
    assert len(got) == 6 and isinstance(got[1], int)


def test_hidden_frames_are_skipped() -> None:
    # classify this test file as a library: the walk must start at its caller (pytest)
    frame = _nested(2)
    got = _both(frame, 2, {THIS_FILE: origin.HIDDEN}, origin._STOP_CODE, 80)
    frames = origin.resolve(got)
    assert frames and all(f.filename != THIS_FILE for f in frames)
    caller = sys._getframe().f_back
    assert caller is not None and frames[0].function == caller.f_code.co_qualname


def test_stop_code_ends_the_walk_and_hides_everything_when_reached_first() -> None:
    frame = _nested(2)
    outer = sys._getframe().f_code  # this test function: the walk must stop before it
    got = _both(frame, 20, {}, outer, 80)
    assert [f.function for f in origin.resolve(got)] == ["_nested"] * 3
    # a stop reached while still skipping library frames: nothing to report
    assert _both(frame, 20, {THIS_FILE: origin.HIDDEN}, outer, 80) == ()


def test_limit_and_empty_inputs() -> None:
    frame = _nested(5)
    assert _both(frame, 3, {THIS_FILE: origin.HIDDEN}, origin._STOP_CODE, 3) == ()
    assert _both(None, 3, {}, origin._STOP_CODE, 80) == ()
    assert _both(frame, 0, {}, origin._STOP_CODE, 80) == ()
    assert len(_both(frame, 1000, {}, origin._STOP_CODE, 80)) <= 2 * origin._MAX_KEEP


def _untyped_ext() -> Any:
    """The extension without its .pyi: for calls that break the contract on purpose (the C
    side must reject them, and mypy would rightly refuse to let them through)."""
    _need_c()
    return origin._framewalk


def test_c_walker_rejects_bad_arguments() -> None:
    walk_c = _need_c()
    ext = _untyped_ext()
    frame = sys._getframe()
    with pytest.raises(TypeError, match="6 arguments"):
        walk_c(frame, 3)
    with pytest.raises(TypeError, match="kinds must be a dict"):
        walk_c(frame, 3, [], origin._classify, origin._STOP_CODE, 80)
    with pytest.raises(TypeError, match="frame object"):
        walk_c("not a frame", 3, {}, origin._classify, origin._STOP_CODE, 80)
    with pytest.raises(TypeError, match="8 arguments"):
        ext.configure(origin._getcurrent)
    configure = ext.configure
    args = (origin._classify, origin._STOP_CODE, 80, "x", asyncio.current_task)
    with pytest.raises(TypeError, match="kinds must be a dict"):
        configure(origin._getcurrent, greenlet.greenlet, [], *args)
    with pytest.raises(TypeError, match="must be a type"):
        configure(origin._getcurrent, "greenlet", {}, *args)
    with pytest.raises(TypeError, match="not a data descriptor"):
        configure(origin._getcurrent, int, {}, *args)
    with pytest.raises(TypeError):
        ext.capture("three")
    with pytest.raises(RuntimeError, match="classify failed"):

        def bad_classify(filename: str) -> int:
            raise RuntimeError("classify failed")

        walk_c(frame, 3, {}, bad_classify, origin._STOP_CODE, 80)


async def test_capture_inside_sqlalchemy_greenlet_names_the_async_caller() -> None:
    """Under AsyncEngine the pool runs in SQLAlchemy's greenlet: both walkers must find the
    coroutine that awaited it, with its exact line."""

    def in_greenlet() -> tuple[Any, Any]:
        return origin.capture(12), origin._capture_py(12)

    line = sys._getframe().f_lineno + 1
    used, reference = await greenlet_spawn(in_greenlet)
    assert used == reference
    first = origin.resolve(used)[0]
    assert (first.filename, first.lineno) == (THIS_FILE, line)
    assert first.function.endswith("test_capture_inside_sqlalchemy_greenlet_names_the_async_caller")
    assert asyncio.current_task() is not None


async def test_checkout_entry_c_and_python_agree() -> None:
    """The ledger entry built in one C call has the layout instrument.RawEntry expects."""
    _need_c()

    def in_greenlet() -> tuple[Any, Any]:
        c = origin._framewalk.checkout_entry(7, 1.5, 0.25, 3)
        py = origin._checkout_entry_py(7, 1.5, 0.25, 3)
        return c, py

    line = sys._getframe().f_lineno + 1
    got_c, got_py = await greenlet_spawn(in_greenlet)
    task = asyncio.current_task()
    for got in (got_c, got_py):
        seq, now, wait, task_ref, thread, stack = got
        assert (seq, now, wait, thread) == (7, 1.5, 0.25, None)
        assert task_ref() is task
        first = origin.resolve(stack)[0]
        assert (first.filename, first.lineno) == (THIS_FILE, line)
    assert origin.resolve(got_c[5]) == origin.resolve(got_py[5])
    # depth 0: no walk at all
    assert origin._framewalk.checkout_entry(1, 0.0, 0.0, 0)[5] == ()
    ext = _untyped_ext()
    with pytest.raises(TypeError, match="4 arguments"):
        ext.checkout_entry(1, 0.0)
    with pytest.raises(TypeError):
        ext.checkout_entry(1, 0.0, 0.0, "deep")


def test_without_the_extension_the_python_walk_is_used_and_named(tmp_path: Any) -> None:
    """An install without a C compiler: same results, and one warning saying why it is slower."""
    import subprocess

    script = tmp_path / "no_ext.py"
    script.write_text(
        "import sys, logging\n"
        "sys.modules['dashboard.pool._framewalk'] = None  # as if it was never built\n"
        "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
        "from sqlalchemy import create_engine\n"
        "from dashboard.pool import origin\n"
        "from dashboard.pool.instrument import instrument\n"
        "assert origin.WALKER == 'python', origin.WALKER\n"
        "assert origin.capture is origin._capture_py\n"
        "assert origin.checkout_entry is origin._checkout_entry_py\n"
        "def here():\n"
        "    return origin.resolve(origin.capture(2))[0]\n"
        "f = here()\n"
        "assert f.function == 'here' and f.lineno == 11, f\n"
        "instrument(create_engine('sqlite://'), 'x')\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(THIS_FILE)),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert "C stack walker" in out.stderr and "was not built" in out.stderr

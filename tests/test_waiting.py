"""tests/waiting.py: polling with a deadline instead of fixed sleeps (no database)."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from typing import assert_type

import pytest

from tests.waiting import (
    WaitTimeout,
    describe,
    holds_for,
    holds_for_async,
    wait_until,
    wait_until_async,
)


def test_returns_the_first_truthy_value() -> None:
    counter = itertools.count()

    def third() -> dict[str, int] | None:
        n = next(counter)
        return {"n": n} if n >= 2 else None

    found = wait_until(third, timeout_s=2, interval_s=0.001)
    assert_type(found, dict[str, int])
    assert found == {"n": 2}


def test_times_out_naming_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        wait_until(lambda: 0, timeout_s=0.1, interval_s=0.02, what="the sampler's first snapshot")
    elapsed = time.monotonic() - started
    assert 0.1 <= elapsed < 1.0
    message = str(caught.value)
    assert "waiting for the sampler's first snapshot" in message
    assert "last saw value 0" in message
    assert re.search(r"limit 0\.1s, \d+ checks", message), message
    assert isinstance(caught.value, AssertionError)  # pytest shows it as a failed assertion


def test_default_description_is_the_docstring_or_the_lambda() -> None:
    def backend_is_active() -> bool:
        """pid 42 to be active"""
        return False

    assert describe(backend_is_active) == "pid 42 to be active"
    assert describe(lambda: 1 + 1 == 3) == "lambda: 1 + 1 == 3"
    with pytest.raises(WaitTimeout, match="waiting for lambda: False; last saw value False"):
        wait_until(lambda: False, timeout_s=0.01)


def test_checks_at_least_once_even_with_no_time() -> None:
    assert wait_until(lambda: "yes", timeout_s=0) == "yes"


def test_exceptions_propagate_unless_ignored() -> None:
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0, timeout_s=1)
    attempts = itertools.count()

    def connect() -> bool:
        if next(attempts) < 2:
            raise ConnectionRefusedError("not yet")
        return True

    assert wait_until(connect, timeout_s=2, interval_s=0.001, ignoring=(ConnectionRefusedError,))
    with pytest.raises(WaitTimeout, match="last saw exception ConnectionRefusedError: nope"):

        def refuse() -> bool:
            raise ConnectionRefusedError("nope")

        wait_until(refuse, timeout_s=0.05, ignoring=(OSError,))


async def test_async_variant_keeps_the_loop_running() -> None:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, done.set)

    async def is_done() -> bool:
        return done.is_set()

    result = await wait_until_async(is_done, timeout_s=2, interval_s=0.01)
    assert_type(result, bool)
    assert result is True
    with pytest.raises(WaitTimeout, match="waiting for a reply that never comes"):

        async def never() -> None:
            return None

        await wait_until_async(never, timeout_s=0.05, what="a reply that never comes")


async def test_sync_variant_refuses_a_coroutine_predicate() -> None:
    async def ready() -> bool:
        return False

    with pytest.raises(TypeError, match="use wait_until_async"):
        wait_until(ready, timeout_s=1)  # type: ignore[unused-coroutine]  # mypy sees it too


def test_holds_for() -> None:
    started = time.monotonic()
    holds_for(lambda: True, 0.1, interval_s=0.02)
    assert time.monotonic() - started >= 0.1
    flips = iter([True, True, False])
    with pytest.raises(WaitTimeout, match=r"the run to stay queued stopped holding .* saw False"):
        holds_for(lambda: next(flips), 5, interval_s=0.001, what="the run to stay queued")


async def test_holds_for_async() -> None:
    async def fine() -> bool:
        return True

    await holds_for_async(fine, 0.05, interval_s=0.01)

    async def broken() -> str:
        return ""

    with pytest.raises(WaitTimeout, match="stopped holding"):
        await holds_for_async(broken, 5)

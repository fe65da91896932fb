"""Login rate limiting: after `max_failures` failed logins for one user name or one address
within `window_s`, further attempts are refused until enough of them have left the window.

- `retry_after()` is the decision, pure: the ages of one key's recent failures → seconds
  to wait. Keys are `"u:<user>"` (lower-cased) and `"a:<address>"`; a success forgets the
  user's key only (logging in with one's own account does not reset an address).
- `LoginRateLimiter` keeps failures in this process's memory, with an injectable clock.
- `LoginLimiter` is what the login form uses: failures shared by every dashboard process
  through a `FailureLog` (PostgreSQL, `ratelimit_store.py`) when there is a database. A
  failure the shared log could not take is counted in this process's memory instead
  (logged), and those count on top of the shared ones, so a state database that is down
  never switches the limit off.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

log = logging.getLogger(__name__)

MAX_FAILURES = 5
WINDOW_S = 300.0
# After the shared log failed, how long the memory alone decides before trying it again
# (a state database that is down must not add a connect timeout to every login).
SHARED_RETRY_S = 5.0


def user_key(user: str) -> str:
    return f"u:{user.lower()}"


def address_key(address: str) -> str:
    return f"a:{address}"


def limit_keys(user: str, address: str) -> tuple[str, str]:
    """The keys one login attempt counts against."""
    return user_key(user), address_key(address)


def retry_after(ages_s: Iterable[float], max_failures: int, window_s: float) -> float:
    """Seconds until one key may try again, from the ages (seconds ago) of its failures;
    0 when allowed now. Blocked while `max_failures` failures are younger than `window_s`,
    until the `max_failures`-th newest of them leaves the window."""
    recent = sorted(age for age in ages_s if age < window_s)
    if len(recent) < max_failures:
        return 0.0
    return max(0.0, window_s - max(0.0, recent[max_failures - 1]))


def worst_retry_after(
    ages_by_key: Mapping[str, Sequence[float]],
    keys: Iterable[str],
    max_failures: int,
    window_s: float,
) -> float:
    """The longest wait over `keys` (an attempt counts against all of them)."""
    return max(
        (retry_after(ages_by_key.get(key, ()), max_failures, window_s) for key in keys),
        default=0.0,
    )


class LoginRateLimiter:
    """Failures in this process's memory (pure, with an injectable clock)."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        cutoff = self.clock() - self.window_s
        while q and q[0] <= cutoff:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def retry_after(self, user: str, address: str) -> float:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        now = self.clock()
        keys = limit_keys(user, address)
        ages = {key: [now - at for at in self._recent(key)] for key in keys}
        return worst_retry_after(ages, keys, self.max_failures, self.window_s)

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        for key in limit_keys(user, address):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, user: str, address: str) -> None:
        self._failures.pop(user_key(user), None)


class FailureLog(Protocol):
    """Failed logins shared by every dashboard process (see ratelimit_store.py)."""

    async def recent_ages(
        self, keys: Sequence[str], max_failures: int, window_s: float
    ) -> dict[str, list[float]]:
        """Per key, the ages in seconds of its newest `max_failures` failures within
        `window_s`."""
        ...

    async def record(self, keys: Sequence[str], window_s: float) -> None:
        """One failure for each key (and drop failures older than the window now and then)."""
        ...

    async def forget(self, key: str) -> None: ...


class LoginLimiter:
    """The login form's limiter: the shared `FailureLog` when there is one; this process's
    memory for the failures it could not take (and for everything, without one)."""

    def __init__(
        self,
        shared: FailureLog | None = None,
        *,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        shared_retry_s: float = SHARED_RETRY_S,
    ) -> None:
        self.shared = shared
        self.local = LoginRateLimiter(max_failures, window_s, clock)
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self.shared_retry_s = shared_retry_s
        self.shared_error: str | None = None  # why the shared log is not used right now
        self._shared_down_until = 0.0

    def _shared(self) -> FailureLog | None:
        if self.shared is None or self.clock() < self._shared_down_until:
            return None
        return self.shared

    def _shared_failed(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        if self.shared_error is None:
            log.warning(
                "login rate limit: the state database is unreachable (%s); counting failed "
                "logins in this process only until it answers again",
                reason,
            )
        self.shared_error = reason
        self._shared_down_until = self.clock() + self.shared_retry_s

    def _shared_ok(self) -> None:
        if self.shared_error is not None:
            log.info("login rate limit: the state database answers again; the limit is shared")
        self.shared_error = None

    async def retry_after(self, user: str, address: str) -> float:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        wait = self.local.retry_after(user, address)
        shared = self._shared()
        if shared is not None:
            keys = limit_keys(user, address)
            try:
                ages = await shared.recent_ages(keys, self.max_failures, self.window_s)
            except Exception as exc:
                self._shared_failed(exc)
            else:
                self._shared_ok()
                wait = max(wait, worst_retry_after(ages, keys, self.max_failures, self.window_s))
        return wait

    async def failed(self, user: str, address: str) -> None:
        shared = self._shared()
        if shared is not None:
            try:
                await shared.record(limit_keys(user, address), self.window_s)
            except Exception as exc:
                self._shared_failed(exc)
            else:
                self._shared_ok()
                return
        self.local.failed(user, address)

    async def succeeded(self, user: str, address: str) -> None:
        self.local.succeeded(user, address)
        shared = self._shared()
        if shared is not None:
            try:
                await shared.forget(user_key(user))
            except Exception as exc:
                self._shared_failed(exc)
            else:
                self._shared_ok()

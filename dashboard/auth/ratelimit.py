"""Login rate limiting: after `max_failures` failed logins for one user name or one address
within `window_s`, further attempts are refused until the window has passed. Pure, with
an injectable clock; per process."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class LoginRateLimiter:
    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        cutoff = self.clock() - self.window_s
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def retry_after(self, user: str, address: str) -> float:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        worst = 0.0
        for key in (f"u:{user.lower()}", f"a:{address}"):
            q = self._recent(key)
            if len(q) >= self.max_failures:
                worst = max(worst, q[0] + self.window_s - self.clock())
        return max(0.0, worst)

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        for key in (f"u:{user.lower()}", f"a:{address}"):
            self._recent(key).append(now)

    def succeeded(self, user: str, address: str) -> None:
        self._failures.pop(f"u:{user.lower()}", None)

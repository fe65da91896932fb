"""Why a request about runs was refused: domain errors with a machine-readable `code`.

They carry no HTTP status: `dashboard.web.errors` maps each class to one, once, in an
exception handler.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import ParamSpec, TypeVar

from dashboard.db import describe_error, is_unavailable

P = ParamSpec("P")
T = TypeVar("T")


class RunError(Exception):
    """A request about runs that cannot be honoured (bad input by default)."""

    def __init__(
        self, message: str, *, code: str = "invalid", extra: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.extra: dict[str, object] = dict(extra or {})


class RunInvalid(RunError):
    """The request is well formed but cannot be planned (unknown target, broken scripts)."""


class RunConflict(RunError):
    """The state moved: another run is active, the database moved, the SQL changed."""


class RunNotFound(RunError):
    """No such run."""


class RunForbidden(RunError):
    """The caller may not do this (four-eyes rule, wrong person)."""


class RunUnauthenticated(RunError):
    """No identity for an action that needs one."""


class RunUnavailable(RunError):
    """The state store or the target database cannot be reached."""


def reachable(
    what: str,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """A database that cannot be reached becomes `RunUnavailable` ("<what> is unreachable:
    <reason>"), so every caller answers 503 with the reason instead of failing."""

    def wrap(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def call(*args: P.args, **kw: P.kwargs) -> T:
            try:
                return await fn(*args, **kw)
            except RunError:
                raise
            except Exception as exc:
                if is_unavailable(exc):
                    raise RunUnavailable(
                        f"{what} is unreachable: {describe_error(exc)}", code="unavailable"
                    ) from exc
                raise

        return call

    return wrap

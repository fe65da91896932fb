# Types of the C extension built from _framewalk.c (see that file for the contract).
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

def walk(
    frame: FrameType | None,
    keep: int,
    kinds: dict[str, int],
    classify: Callable[[str], int],
    stop: CodeType,
    limit: int,
    /,
) -> tuple[Any, ...]: ...
def configure(
    getcurrent: Callable[[], Any],
    greenlet_type: type,
    kinds: dict[str, int],
    classify: Callable[[str], int],
    stop: CodeType,
    limit: int,
    provider_attr: str,
    current_task: Callable[[], Any],
    /,
) -> None: ...
def checkout_entry(seq: int, now: float, wait: float, depth: int, /) -> tuple[Any, ...]: ...
def capture(keep: int, /) -> tuple[Any, ...]: ...

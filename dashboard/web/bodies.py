"""JSON request bodies, parsed in one place (pure: bytes in, a value or `BodyError` out).

Python's `json` decoder recurses once per nesting level: `"[" * 5000` raises
`RecursionError`, which no caller expects. Here every way a body can be malformed
(not UTF-8, not JSON, nested too deeply, a number too long to convert) becomes one
`BodyError` with a sentence for people; callers turn it into their own 400.
"""

from __future__ import annotations

import json
from typing import Any

# Every body the dashboard takes is an object of scalars and short lists: two levels.
MAX_DEPTH = 32


class BodyError(ValueError):
    """The body is not usable JSON; the message says why (for a 400)."""


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed value (a scalar is 0); iterative."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The parsed body; `BodyError` when it is not JSON or nests deeper than `max_depth`."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BodyError(
            f"the body nests too deeply (at most {max_depth} levels of [] or {{}})"
        ) from None
    except UnicodeDecodeError:
        raise BodyError("the body is not valid JSON (it is not UTF-8 text)") from None
    except ValueError:  # JSONDecodeError, and int() refusing a number of >4300 digits
        raise BodyError("the body is not valid JSON") from None
    if depth(value) > max_depth:
        raise BodyError(f"the body nests too deeply (at most {max_depth} levels of [] or {{}})")
    return value


def parse_json_object(raw: bytes, shape: str = "") -> dict[str, Any]:
    """The body as a JSON object; `shape` (e.g. `{"backend_start": "..."}`) is named in
    the message when it is anything else."""
    value = parse_json(raw)
    if not isinstance(value, dict):
        raise BodyError("expected a JSON object" + (f": {shape}" if shape else ""))
    return value

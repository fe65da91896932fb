"""Input of the runs pages and API: bodies parsed and checked, with a clear 400/413 for
anything malformed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException

from dashboard.auth.guards import identity_of
from dashboard.auth.roles import at_least
from dashboard.migrations.plan import DIRECTIONS

MAX_BODY = 16 * 1024


def _strings(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HTTPException(
            status_code=400,
            detail=f"{name} must be a list of revision ids (use [] for an empty database)",
        )
    if len(value) > 50 or any(len(v) > 200 for v in value):
        raise HTTPException(status_code=400, detail=f"{name} is too long")
    return value


@dataclass(frozen=True)
class RunRequest:
    """`POST /api/runs`: what to run, and where the caller saw the database."""

    direction: str
    target: str
    expected_current: list[str]
    sql_sha256: str | None


async def parse_run_request(request: Request[Any, Any, Any]) -> RunRequest:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HTTPException(status_code=413, detail="request body too large")
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise HTTPException(status_code=400, detail="the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(
            status_code=400,
            detail='expected a JSON object: {"direction", "target", "expected_current"}',
        )
    direction = body.get("direction")
    if direction not in DIRECTIONS:
        raise HTTPException(status_code=400, detail='direction must be "upgrade" or "downgrade"')
    target = body.get("target")
    if not isinstance(target, str) or not target.strip():
        raise HTTPException(
            status_code=400, detail="target is required (heads, base, +1, -1 or a revision id)"
        )
    if "expected_current" not in body:
        raise HTTPException(
            status_code=400,
            detail="expected_current is required: the revision(s) you saw the database at "
            "([] for an empty database); the run is refused if it has moved",
        )
    expected = _strings(body["expected_current"], "expected_current")
    sha = body.get("sql_sha256")
    if sha is not None and not isinstance(sha, str):
        raise HTTPException(status_code=400, detail="sql_sha256 must be a string")
    return RunRequest(direction, target.strip(), expected, sha)


def can_run(request: Request[Any, Any, Any]) -> bool:
    return at_least(identity_of(request).role, "operator")


async def read_decision(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The optional body of approve / reject / execute: a JSON object or a form."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HTTPException(status_code=413, detail="request body too large")
    if not raw.strip():
        return {}
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        return {k: form.get(k) for k in form if k != "_csrf_token"}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(status_code=400, detail="the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(status_code=400, detail="expected a JSON object")
    return body


def opt_text(body: dict[str, Any], name: str, limit: int = 200) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise HTTPException(status_code=400, detail=f"{name} must be text (at most {limit})")
    return value.strip() or None

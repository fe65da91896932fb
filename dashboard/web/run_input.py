"""Input of the runs pages and API: bodies parsed and checked, with a clear 400/413 for
anything malformed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException

from dashboard.auth.guards import identity_of
from dashboard.auth.roles import at_least
from dashboard.migrations.plan import DIRECTIONS
from dashboard.review.pins import from_form
from dashboard.validation import InvalidText, clean_text
from dashboard.web.bodies import BodyError, parse_json_object
from dashboard.web.errors import invalid_text_as_http

MAX_BODY = 16 * 1024
MAX_REVISION = 200  # a revision id, or a target such as "heads", "+1", "abc123@head"
# Free text that may span lines (the page's textareas); every other field is one line.
MULTILINE_FIELDS = frozenset({"comment", "reason", "ack_reason"})


def text_field(
    value: object, name: str, *, max_len: int, required: bool = False, multiline: bool = False
) -> str | None:
    """`clean_text`, refusing with the one 400 an invalid text gets (web/errors)."""
    try:
        return clean_text(value, name, max_len=max_len, required=required, multiline=multiline)
    except InvalidText as exc:
        raise invalid_text_as_http(exc) from None


def _strings(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HTTPException(
            status_code=400,
            detail=f"{name} must be a list of revision ids (use [] for an empty database)",
        )
    if len(value) > 50:
        raise HTTPException(status_code=400, detail=f"{name} is too long")
    return [
        str(text_field(v, f"{name}[{i}]", max_len=MAX_REVISION, required=True))
        for i, v in enumerate(value)
    ]


def _json_object(raw: bytes, shape: str = "") -> dict[str, Any]:
    try:
        return parse_json_object(raw, shape)
    except BodyError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


@dataclass(frozen=True)
class RunRequest:
    """`POST /api/runs`: what to run, and where the caller saw the database."""

    direction: str
    target: str
    expected_current: list[str]
    sql_sha256: str | None
    acknowledge: object = None  # checked against the review by the service


async def parse_run_request(request: Request[Any, Any, Any]) -> RunRequest:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HTTPException(status_code=413, detail="request body too large")
    body = _json_object(raw or b"null", '{"direction", "target", "expected_current"}')
    direction = body.get("direction")
    if direction not in DIRECTIONS:
        raise HTTPException(status_code=400, detail='direction must be "upgrade" or "downgrade"')
    target = body.get("target")
    if not isinstance(target, str) or not target.strip():
        raise HTTPException(
            status_code=400, detail="target is required (heads, base, +1, -1 or a revision id)"
        )
    target = str(text_field(target, "target", max_len=MAX_REVISION, required=True))
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
    if sha:  # "" is kept: it matches no SQL, so the run is refused as changed (409)
        sha = str(text_field(sha, "sql_sha256", max_len=64, required=True))
    return RunRequest(direction, target, expected, sha, acknowledgements_of(body))


@dataclass(frozen=True)
class RunForm:
    """`POST /runs`, the confirmation form: the request plus what the person typed."""

    direction: str
    target: str
    expected_current: list[str]
    confirm: str
    confirm_value: str
    sql_sha256: str | None
    acknowledge: object = None


def parse_run_form(form: Mapping[str, Any]) -> RunForm:
    """Every field of the confirmation form through `clean_text` (400 naming the field);
    `expected_current` is comma-separated there."""

    def field(name: str, max_len: int = MAX_REVISION) -> str:
        return text_field(form.get(name), name, max_len=max_len) or ""

    expected = field("expected_current", 50 * (MAX_REVISION + 1))
    return RunForm(
        direction=field("direction", 20),
        target=field("target"),
        expected_current=_strings(
            [r.strip() for r in expected.split(",") if r.strip()], "expected_current"
        ),
        confirm=field("confirm"),
        confirm_value=field("confirm_value"),
        sql_sha256=field("sql_sha256", 64) or None,
        acknowledge=acknowledgements_of(form),
    )


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
        out: dict[str, Any] = {k: form.get(k) for k in form if k != "_csrf_token"}
        if "ack" in form:
            out["ack"] = [str(v) for v in form.getall("ack")]
        return out
    return _json_object(raw)


def acknowledgements_of(body: Mapping[str, Any]) -> object:
    """Acknowledgements in a decision or request body: the JSON list `acknowledge`
    (`[{"revision", "rule", "index"?, "reason"}]`) or the form's `ack` checkboxes
    (`rule|revision|index`) sharing the one reason `ack_reason`."""
    if "acknowledge" in body:
        return body["acknowledge"]
    keys = body.get("ack")
    if keys:
        return from_form(
            [str(k) for k in (keys if isinstance(keys, list) else [keys])], body.get("ack_reason")
        )
    return None


def opt_text(
    body: dict[str, Any], name: str, limit: int = 200, *, multiline: bool | None = None
) -> str | None:
    """An optional text field of a decision body, trimmed; None when absent or blank.
    Multi-line by default only for free text (`comment`, `reason`)."""
    if multiline is None:
        multiline = name in MULTILINE_FIELDS
    return text_field(body.get(name), name, max_len=limit, multiline=multiline)

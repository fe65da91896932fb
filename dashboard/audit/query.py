"""Reading the audit log, pure: filters from query parameters, JSON entries, CSV.

CSV cells that a spreadsheet would treat as a formula (starting with = + - @, or a tab or
carriage return) are prefixed with a single quote, so an actor name or a reason like
`=HYPERLINK(...)` is shown as text, never evaluated.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from dashboard.audit.repo import AuditEntry, AuditQuery
from dashboard.validation import InvalidText, clean_text

DEFAULT_LIMIT = 200
MAX_LIMIT = 10_000
MAX_FILTER = 200
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = ("id", "at", "actor", "address", "action", "target", "outcome", "detail")


class FilterError(ValueError):
    """A filter parameter is malformed (the HTTP layer answers 400 with this message).
    Text that `clean_text` refuses (a NUL, a control character) is one."""


def parse_time(name: str, raw: str) -> datetime:
    """ISO 8601 date or date-time (a browser's datetime-local value too); naive is UTC."""
    text = raw.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(
            f"{name}={raw[:40]!r} is not a date or time (use ISO 8601, e.g. 2026-11-22T10:00)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_filters(params: Mapping[str, str], *, default_limit: int = DEFAULT_LIMIT) -> AuditQuery:
    def text(name: str) -> str | None:
        try:
            return clean_text(params.get(name), name, max_len=MAX_FILTER)
        except InvalidText as exc:
            raise FilterError(exc.message) from None

    limit = default_limit
    raw_limit = (params.get("limit") or "").strip()
    if raw_limit:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise FilterError(f"limit={raw_limit[:20]!r} is not a whole number") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise FilterError(f"limit must be between 1 and {MAX_LIMIT}")
    since_raw, until_raw = text("since"), text("until")
    since = parse_time("since", since_raw) if since_raw else None
    until = parse_time("until", until_raw) if until_raw else None
    if since is not None and until is not None and until <= since:
        raise FilterError("until must be later than since")
    return AuditQuery(
        actor=text("actor"),
        action=text("action"),
        outcome=text("outcome"),
        since=since,
        until=until,
        limit=limit,
    )


def filter_params(q: AuditQuery) -> dict[str, str]:
    """The query parameters that reproduce `q` (links to the JSON and CSV exports)."""
    out: dict[str, str] = {}
    for name in ("actor", "action", "outcome"):
        value = getattr(q, name)
        if value:
            out[name] = value
    if q.since is not None:
        out["since"] = q.since.isoformat()
    if q.until is not None:
        out["until"] = q.until.isoformat()
    return out


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    """One entry as `/api/audit` shows it (the field names are a fixed interface)."""
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "address": entry.address,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "detail": dict(entry.detail),
    }


def safe_cell(value: Any) -> str | int:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return value
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if text.startswith(FORMULA_START):
        return "'" + text
    return text


def to_csv(entries: Iterable[AuditEntry]) -> str:
    """The same entries as `/api/audit`, one row each, formulas defused."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        row = entry_json(entry)
        writer.writerow([safe_cell(row[col]) for col in CSV_COLUMNS])
    return buf.getvalue()

"""The full session list of the Activity page: one row per client backend, with the state
a person should read ("waiting" for a lock waiter), and its sort, filter and validation.
Pure: sessions in, JSON-ready rows out; no I/O, no framework.

PostgreSQL reports a session that waits for a heavyweight lock as `state = 'active'`.
For triage it is not doing work: it counts, and is listed, as **waiting**. The raw
`state` is kept as PostgreSQL says it; `display_state` and `waiting` carry the reading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dashboard.server.model import HIDDEN_QUERY_NOTE, Session
from dashboard.validation import InvalidText, clean_text

WAITING = "waiting"
NOT_IDLE = "not idle"  # filter only: every session that is not plain idle

# Order of states in counts, the budget bar and the "state" sort (ascending).
STATE_ORDER: tuple[str, ...] = (
    "active",
    WAITING,
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
    "idle",
    "unknown",
)
STATE_FILTERS: tuple[str, ...] = (NOT_IDLE, *STATE_ORDER)

# sort key -> (label, default direction)
SORT_KEYS: dict[str, tuple[str, str]] = {
    "state": ("state", "asc"),
    "wait_event": ("wait event", "asc"),
    "xact_age": ("transaction age", "desc"),
    "query_age": ("query age", "desc"),
    "user": ("user", "asc"),
    "application": ("application", "asc"),
    "client": ("client", "asc"),
    "pid": ("pid", "asc"),
}
DEFAULT_SORT = "xact_age"
DIRECTIONS = ("asc", "desc")
MAX_TEXT = 200


class SessionQueryError(ValueError):
    """A sort, direction, state or text parameter is not valid (HTTP answers 400).
    `field` names the parameter; the message lists what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SessionQuery:
    sort: str = DEFAULT_SORT
    direction: str = SORT_KEYS[DEFAULT_SORT][1]
    state: str | None = None  # one of STATE_FILTERS, None for every state
    text: str | None = None  # case-insensitive substring of user, application, client, query

    @property
    def filtered(self) -> bool:
        return self.state is not None or self.text is not None

    def params(self) -> dict[str, str]:
        """The query parameters that reproduce this query (only those that are set)."""
        out = {"sort": self.sort, "dir": self.direction}
        if self.state is not None:
            out["state"] = self.state
        if self.text is not None:
            out["q"] = self.text
        return out

    def to_json(self) -> dict[str, Any]:
        return {"sort": self.sort, "dir": self.direction, "state": self.state, "q": self.text}


def parse_session_query(params: Mapping[str, str]) -> SessionQuery:
    """`sort`, `dir`, `state`, `q` from query parameters; missing or empty ones take their
    defaults. Raises `SessionQueryError` naming the parameter."""
    sort = (params.get("sort") or "").strip() or DEFAULT_SORT
    if sort not in SORT_KEYS:
        raise SessionQueryError(
            "sort", f"sort={sort[:40]!r} is not a sort key; use one of: {', '.join(SORT_KEYS)}"
        )
    direction = (params.get("dir") or "").strip().lower() or SORT_KEYS[sort][1]
    if direction not in DIRECTIONS:
        raise SessionQueryError("dir", f"dir={direction[:20]!r} must be asc or desc")
    raw_state = (params.get("state") or "").strip()
    state: str | None = None
    if raw_state and raw_state != "all":
        if raw_state not in STATE_FILTERS:
            raise SessionQueryError(
                "state",
                f"state={raw_state[:60]!r} is not a session state; use one of: "
                + ", ".join(STATE_FILTERS),
            )
        state = raw_state
    try:
        text = clean_text(params.get("q"), "q", max_len=MAX_TEXT)
    except InvalidText as exc:
        raise SessionQueryError("q", exc.message) from None
    return SessionQuery(sort=sort, direction=direction, state=state, text=text)


# --- reading one session -------------------------------------------------------------


def is_waiting(s: Session) -> bool:
    """Waiting for a heavyweight lock: pg_stat_activity says so, or pg_locks does (a role
    without pg_read_all_stats sees other users' wait_event_type as NULL, but their
    pg_locks rows in full)."""
    return s.wait_event_type == "Lock" or s.wait is not None


def display_state(s: Session) -> str:
    return WAITING if is_waiting(s) else (s.state or "unknown")


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def session_row(s: Session, database: str | None, *, query_limit_bytes: int = 0) -> dict[str, Any]:
    """One row of `/api/activity` `sessions` (DESIGN fields, plus what the page needs).
    `query_limit_bytes` is track_activity_query_size: a text that long was cut by the
    server (`query_truncated`)."""
    hidden = s.hidden
    query = None if hidden else (s.query or "")
    truncated = bool(query and query_limit_bytes and len(query.encode()) >= query_limit_bytes - 1)
    return {
        "pid": s.pid,
        "backend_start": s.backend_start.isoformat() if s.backend_start else None,
        "usename": s.usename,
        "user": s.usename,  # the name the other session shapes of the area use
        "application_name": s.application_name,
        "client_addr": s.client_addr,
        "database": s.datname,
        "state": s.state,
        "display_state": display_state(s),
        "waiting": is_waiting(s),
        "wait_event_type": s.wait_event_type,
        "wait_event": s.wait_event,
        "wait_target": s.wait.target() if s.wait else None,
        "wait_mode": s.wait.mode if s.wait else None,
        "xact_age_s": _r(s.xact_age_s),
        "query_age_s": _r(s.query_age_s),
        "state_age_s": _r(s.state_age_s),
        "query": query,
        "query_visible": not hidden,
        "query_note": HIDDEN_QUERY_NOTE if hidden else None,
        "query_truncated": truncated,
        "is_dashboard": s.is_dashboard,
        "signalable": s.signalable_in(database),
    }


def session_rows(
    sessions: Iterable[Session], database: str | None, *, query_limit_bytes: int = 0
) -> list[dict[str, Any]]:
    """Every client backend, as rows in the default order."""
    rows = [
        session_row(s, database, query_limit_bytes=query_limit_bytes)
        for s in sessions
        if s.is_client
    ]
    return sort_rows(rows, SessionQuery())


# --- filter and sort ------------------------------------------------------------------


def matches(row: Mapping[str, Any], q: SessionQuery) -> bool:
    if q.state == NOT_IDLE:
        if row["display_state"] == "idle":
            return False
    elif q.state is not None and row["display_state"] != q.state:
        return False
    if q.text is not None:
        needle = q.text.casefold()
        fields = (
            row.get("usename"),
            row.get("application_name"),
            row.get("client_addr"),
            row.get("query") if row.get("query_visible") else None,
        )
        if not any(f and needle in str(f).casefold() for f in fields):
            return needle.isdigit() and str(row["pid"]) == needle
    return True


_STATE_RANK = {s: i for i, s in enumerate(STATE_ORDER)}


def _num(value: Any) -> float:
    return -1.0 if value is None else float(value)


def _text(value: Any) -> str | None:
    return str(value).casefold() if value not in (None, "") else None


def _wait(row: Mapping[str, Any]) -> str | None:
    if not row.get("wait_event_type") and not row.get("waiting"):
        return None
    return f"{row.get('wait_event_type') or 'Lock'}:{row.get('wait_event') or ''}".casefold()


_SORT_VALUE: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "state": lambda r: _STATE_RANK.get(r["display_state"], len(_STATE_RANK)),
    "wait_event": _wait,
    "xact_age": lambda r: r.get("xact_age_s"),
    "query_age": lambda r: r.get("query_age_s"),
    "user": lambda r: _text(r.get("usename")),
    "application": lambda r: _text(r.get("application_name")),
    "client": lambda r: _text(r.get("client_addr")),
    "pid": lambda r: r["pid"],
}


def sort_rows(rows: Sequence[Mapping[str, Any]], q: SessionQuery) -> list[dict[str, Any]]:
    """Sorted by `q.sort` in `q.direction`; unknown values (None, empty) always last;
    ties by the oldest transaction first, then pid."""
    value = _SORT_VALUE[q.sort]
    # Stable sorts, least significant key first.
    out = sorted(rows, key=lambda r: r["pid"])
    out.sort(key=lambda r: -_num(r.get("xact_age_s")))
    known = [r for r in out if value(r) is not None]
    unknown = [r for r in out if value(r) is None]
    known.sort(key=value, reverse=q.direction == "desc")
    return [dict(r) for r in known + unknown]


@dataclass(frozen=True, slots=True)
class SessionSelection:
    rows: list[dict[str, Any]]
    total: int  # every client backend
    matched: int  # those the filter kept (rows may be cut to a display limit)


def select(
    rows: Sequence[Mapping[str, Any]],
    q: SessionQuery,
    *,
    limit: int | None = None,
    blast_radius: Mapping[int, int] | None = None,
    blocked_by: Mapping[int, Sequence[int]] | None = None,
) -> SessionSelection:
    """The rows `q` keeps, in its order (copies: the snapshot's rows stay untouched), each
    with `blast_radius` (sessions waiting behind it) and `blocked_by` (the pids it waits
    for) from the snapshot's blocking graph."""
    kept = [r for r in rows if matches(r, q)]
    ordered = sort_rows(kept, q)
    shown = ordered if limit is None else ordered[:limit]
    for r in shown:
        r["blast_radius"] = (blast_radius or {}).get(r["pid"], 0)
        r["blocked_by"] = list((blocked_by or {}).get(r["pid"], ()))
    return SessionSelection(rows=shown, total=len(rows), matched=len(kept))


def sort_link(q: SessionQuery, key: str) -> dict[str, str]:
    """The parameters a column header links to: this key, flipped when already sorted by
    it, else the key's default direction; filters kept."""
    if key == q.sort:
        direction = "asc" if q.direction == "desc" else "desc"
    else:
        direction = SORT_KEYS[key][1]
    return SessionQuery(sort=key, direction=direction, state=q.state, text=q.text).params()

"""What an Overview card may claim, decided from plain values (pure, no I/O).

Every card has one state, the worst relevant truth:

- `alarm`: something is wrong now (sessions wait on locks, callers wait for a connection);
- `warn`: needs a look (connections held in a lock pile-up, the pool full, idle
  transactions, pending migrations);
- `unknown`: the card cannot know (the database is unreachable, sampling fails, the last
  sample is too old) -- never shown as green;
- `ok`: checked, and nothing wrong.

and the time its figures were taken, so two cards sampled at different moments can be
read side by side.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

CardState = Literal["ok", "warn", "alarm", "unknown"]
STATES: tuple[CardState, ...] = ("ok", "warn", "unknown", "alarm")  # mildest first


def worst(states: Iterable[CardState]) -> CardState:
    """The most severe of `states` (ok < warn < unknown < alarm); ok when there are none."""
    return max(states, key=STATES.index, default="ok")


@dataclass(frozen=True)
class SampleTime:
    """When a card's figures were taken, said both ways: "1.2 s ago" and the clock."""

    at: float  # epoch seconds
    age_s: float
    live: bool = False  # read in process at render time (no sampling involved)

    @property
    def clock(self) -> str:
        dt = datetime.fromtimestamp(self.at, UTC)
        if dt.date() != datetime.now(UTC).date():
            return dt.strftime("%Y-%m-%d %H:%M:%S UTC")
        return dt.strftime("%H:%M:%S UTC")

    @property
    def iso(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).isoformat()

    @property
    def ago(self) -> str:
        return age_text(self.age_s)

    @property
    def text(self) -> str:
        if self.live:
            return f"live, read at {self.clock}"
        return f"sampled {self.ago} (at {self.clock})"

    def to_json(self) -> dict[str, Any]:
        return {"at": self.iso, "age_s": round(self.age_s, 3), "live": self.live}


def sample_time(at: float | None, now: float, *, live: bool = False) -> SampleTime | None:
    if not at:
        return None
    return SampleTime(at=at, age_s=max(0.0, now - at), live=live)


def age_text(age_s: float) -> str:
    """0.4 s ago, 12 s ago, 3 min ago, 2 h ago."""
    if age_s < 10:
        return f"{age_s:.1f} s ago"
    if age_s < 120:
        return f"{age_s:.0f} s ago"
    if age_s < 7200:
        return f"{age_s / 60:.0f} min ago"
    return f"{age_s / 3600:.0f} h ago"


def server_unknown(
    *,
    database_ok: bool | None,
    database_reason: str,
    sampler_error: str | None,
    sample_at: float | None,
    stale: bool,
    now: float,
) -> str | None:
    """Why the latest server sample cannot be trusted right now (None: it can).

    `database_ok` is the reachability probe's verdict (None: not checked yet);
    `sampler_error` the last sampling failure (None after a success); `stale` whether the
    latest sample is older than a few sampling intervals.
    """
    if database_ok is False:
        return f"database unreachable: {database_reason or 'no reason given'}"
    if sampler_error:
        return f"server sampling failing: {sampler_error}"
    if sample_at is None:
        return "no server sample taken yet"
    if stale:
        return f"the last server sample is from {age_text(max(0.0, now - sample_at))}"
    return None


def split_reason(text: str) -> tuple[str, str | None]:
    """ "database unreachable: connection refused" -> ("database unreachable", "connection
    refused"): a short headline, the driver's words below it."""
    head, sep, detail = text.partition(": ")
    return (head, detail) if sep and detail else (text, None)


@dataclass(frozen=True)
class LocksVerdict:
    state: CardState
    headline: str
    detail: str | None = None  # the reason, under the headline


def locks_verdict(
    *,
    unknown: str | None,
    blocked_count: int,
    idle_in_transaction_count: int,
    long_running_count: int,
    warnings: int,
) -> LocksVerdict:
    """The Locks & sessions card: lock waits are an alarm; idle transactions, long queries
    and connection-budget warnings need a look; an untrustworthy sample is unknown."""
    if unknown is not None:
        head, detail = split_reason(unknown)
        return LocksVerdict("unknown", f"unknown — {head}", detail)
    if blocked_count:
        return LocksVerdict("alarm", f"{blocked_count} waiting on locks")
    if idle_in_transaction_count or long_running_count or warnings:
        return LocksVerdict("warn", "No lock waits")
    return LocksVerdict("ok", "No lock waits")


SCHEMA_STATES: dict[str, CardState] = {
    "up_to_date": "ok",
    "pending": "warn",
    "uninitialized": "warn",
    "ahead": "alarm",
    "diverged": "alarm",
}


def schema_state(status_state: str | None, *, script_errors: int = 0) -> CardState:
    """The Schema card: None (the status could not be read) is unknown."""
    if status_state is None:
        return "unknown"
    state = SCHEMA_STATES.get(status_state, "unknown")
    return worst([state, "alarm" if script_errors else "ok"])

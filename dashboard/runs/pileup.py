"""The pile-up watchdog's decision (pure): while the migration backend waits for a lock,
every session that queues behind it waits too. When too many queue, or the oldest of them
has waited too long, the migration's wait is cancelled at once and the lock retries take
over (`DASHBOARD_PILEUP_MAX_WAITERS`, `DASHBOARD_PILEUP_MAX_WAIT_MS`)."""

from __future__ import annotations

from dataclasses import dataclass

# How often the watchdog reads pg_locks while a migration statement is in flight. The worst
# wait of a session queued behind the migration is about PILEUP_MAX_WAIT_MS plus this plus
# the time a cancel takes to land.
WATCH_INTERVAL_S = 0.1
# A statement in flight for less than this is not watched (most finish in microseconds).
WATCH_AFTER_S = 0.05


@dataclass
class WatchdogStats:
    """The watchdog's own cost, reported with the run's progress."""

    looks: int = 0  # statements it sent
    cancels: int = 0
    query_s: float = 0.0  # time its statements took
    watched_s: float = 0.0  # time a migration statement was in flight long enough to watch

    def to_json(self) -> dict[str, float | int]:
        rate = self.looks / self.watched_s if self.watched_s > 0 else 0.0
        return {
            "looks": self.looks,
            "cancels": self.cancels,
            "watched_s": round(self.watched_s, 3),
            "looks_per_s": round(rate, 1),
            "mean_look_ms": round(self.query_s * 1000 / self.looks, 3) if self.looks else 0.0,
        }


@dataclass(frozen=True)
class PileupLimits:
    max_waiters: int = 5
    max_wait_ms: int = 1000


@dataclass(frozen=True)
class PileupReading:
    """One look at the migration backend: does it wait for a lock, and who waits for it."""

    runner_waiting: bool  # wait_event_type = 'Lock'
    waiters: int = 0  # sessions whose pg_blocking_pids() contains the migration backend
    oldest_wait_ms: float = 0.0  # the longest of their waits so far


def cancel_reason(reading: PileupReading, limits: PileupLimits) -> str | None:
    """Why the migration's lock wait must be cancelled now, or None."""
    if not reading.runner_waiting or reading.waiters == 0:
        return None
    if reading.waiters >= limits.max_waiters:
        return (
            f"{reading.waiters} session(s) queued behind the migration's lock wait "
            f"(limit {limits.max_waiters})"
        )
    if reading.oldest_wait_ms >= limits.max_wait_ms:
        return (
            f"a session queued behind the migration's lock wait has waited "
            f"{reading.oldest_wait_ms / 1000:.1f} s (limit {limits.max_wait_ms} ms)"
        )
    return None

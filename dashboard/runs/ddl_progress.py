"""Live progress of a long DDL statement of the migration backend (pure).

PostgreSQL reports `CREATE INDEX` / `REINDEX` in `pg_stat_progress_create_index` and
`CLUSTER` / `VACUUM FULL` in `pg_stat_progress_cluster`, one row per backend, with a phase
and several counters of which only some mean something in a given phase. `pick()` chooses
the counter pair that matters for the phase; `DdlTracker` keeps a short history of the
picked counter and derives an ETA from its rate within the same phase.

The run's JSON carries the result as `progress["ddl"]` (see `DdlProgress.to_json`), with
`progress["phase"]` and `progress["eta_s"]` copied to the top level (`progress_fields`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

CREATE_INDEX_VIEW = "create_index"
CLUSTER_VIEW = "cluster"

BLOCKS = "blocks"
TUPLES = "tuples"
LOCKERS = "lockers"
PARTITIONS = "partitions"
INDEXES = "indexes"

BUILDING_INDEX = "building index"


@dataclass(frozen=True)
class DdlSample:
    """One row of either progress view for the migration backend, as read.

    `view` is `create_index` or `cluster`; counters of the other view stay None.
    `rel_tuples` (pg_class.reltuples) and `index_count` (indexes on the table) are
    estimates the cluster view lacks: the total of an index scan and of the index rebuild.
    """

    view: str
    command: str | None
    phase: str | None
    relation: str | None = None
    index: str | None = None
    # pg_stat_progress_create_index
    lockers_total: int | None = None
    lockers_done: int | None = None
    current_locker_pid: int | None = None
    blocks_total: int | None = None
    blocks_done: int | None = None
    tuples_total: int | None = None
    tuples_done: int | None = None
    partitions_total: int | None = None
    partitions_done: int | None = None
    # pg_stat_progress_cluster
    heap_tuples_scanned: int | None = None
    heap_tuples_written: int | None = None
    heap_blks_total: int | None = None
    heap_blks_scanned: int | None = None
    index_rebuild_count: int | None = None
    # estimates from the catalog
    rel_tuples: float | None = None
    index_count: int | None = None


@dataclass(frozen=True)
class DdlProgress:
    """What a person needs: which command, in which phase, how far, how long still."""

    command: str
    phase: str
    done: int | None
    total: int | None
    unit: str | None
    percent: float | None
    eta_s: float | None
    relation: str | None
    index: str | None
    current_locker_pid: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "command": self.command,
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "percent": self.percent,
            "eta_s": self.eta_s,
            "relation": self.relation,
            "index": self.index,
            "current_locker_pid": self.current_locker_pid,
        }


def progress_fields(ddl: DdlProgress | None) -> dict[str, object]:
    """The keys a run's `progress` dict gains: `ddl`, and `phase` / `eta_s` copied from
    it (all None when no DDL reports progress)."""
    return {
        "ddl": ddl.to_json() if ddl else None,
        "phase": ddl.phase if ddl else None,
        "eta_s": ddl.eta_s if ddl else None,
    }


@dataclass(frozen=True)
class _Counter:
    unit: str | None
    done: int | None
    total: int | None


_NONE = _Counter(None, None, None)


def _positive(n: int | float | None) -> int | None:
    return int(n) if n is not None and n > 0 else None


def _counter(unit: str, done: int | None, total: int | float | None) -> _Counter:
    return _Counter(unit, max(0, done or 0), _positive(total))


def _create_index_counter(s: DdlSample, phase: str) -> _Counter:
    if _positive(s.partitions_total):
        # a partitioned index: the per-partition phases repeat, the partitions count on
        return _counter(PARTITIONS, s.partitions_done, s.partitions_total)
    if phase.startswith("waiting for"):
        return _counter(LOCKERS, s.lockers_done, s.lockers_total)
    if phase == "index validation: sorting tuples":
        return _NONE
    if phase.startswith("index validation"):
        return _counter(BLOCKS, s.blocks_done, s.blocks_total)
    if phase.startswith(BUILDING_INDEX):
        sub = phase[len(BUILDING_INDEX) :].lstrip(": ")
        if "scan" in sub:
            return _counter(BLOCKS, s.blocks_done, s.blocks_total)
        if "load" in sub or "sort" in sub:
            return _counter(TUPLES, s.tuples_done, s.tuples_total)
        # an access method without sub-phases: whichever counter it fills
        if _positive(s.blocks_total):
            return _counter(BLOCKS, s.blocks_done, s.blocks_total)
        if _positive(s.tuples_total):
            return _counter(TUPLES, s.tuples_done, s.tuples_total)
    return _NONE


def _cluster_counter(s: DdlSample, phase: str) -> _Counter:
    if phase == "seq scanning heap":
        return _counter(BLOCKS, s.heap_blks_scanned, s.heap_blks_total)
    if phase == "index scanning heap":
        # no total in the view: the planner's row estimate stands in for it
        return _counter(TUPLES, s.heap_tuples_scanned, s.rel_tuples)
    if phase == "writing new heap":
        return _counter(TUPLES, s.heap_tuples_written, s.heap_tuples_scanned)
    if phase == "rebuilding index":
        return _counter(INDEXES, s.index_rebuild_count, s.index_count)
    return _NONE


def pick(sample: DdlSample) -> DdlProgress:
    """The counter pair that matters for the sample's phase, without an ETA."""
    phase = sample.phase or "unknown"
    if sample.view == CLUSTER_VIEW:
        c = _cluster_counter(sample, phase)
    else:
        c = _create_index_counter(sample, phase)
    percent = None
    if c.done is not None and c.total:
        percent = round(min(100.0, 100.0 * c.done / c.total), 1)
    locker = sample.current_locker_pid if c.unit == LOCKERS else None
    return DdlProgress(
        command=sample.command or "unknown",
        phase=phase,
        done=c.done,
        total=c.total,
        unit=c.unit,
        percent=percent,
        eta_s=None,
        relation=sample.relation,
        index=sample.index,
        current_locker_pid=_positive(locker),
    )


def _track_key(p: DdlProgress) -> tuple[str | None, ...]:
    # a partitioned build repeats per-partition phases while its partition count goes on
    phase = None if p.unit == PARTITIONS else p.phase
    return (p.command, p.relation, p.index, phase, p.unit)


class DdlTracker:
    """Keeps the recent samples of one phase and estimates the time left from their rate.

    The ETA is None until two samples of the same phase show progress, when the total is
    unknown, and when the counter stood still over the window; it is reset whenever the
    phase (or command, relation, unit) changes or the counter goes backwards.
    """

    def __init__(self, window_s: float = 15.0, max_points: int = 100) -> None:
        self.window_s = window_s
        self._points: deque[tuple[float, int]] = deque(maxlen=max_points)
        self._key: tuple[str | None, ...] | None = None

    def reset(self) -> None:
        self._points.clear()
        self._key = None

    def observe(self, sample: DdlSample | None, at: float) -> DdlProgress | None:
        """Feed the latest sample (None: no DDL reports) taken at monotonic time `at`."""
        if sample is None:
            self.reset()
            return None
        progress = pick(sample)
        key = _track_key(progress)
        if key != self._key:
            self.reset()
            self._key = key
        if progress.done is None:
            self._points.clear()
            return progress
        if self._points and (progress.done < self._points[-1][1] or at < self._points[-1][0]):
            self._points.clear()
        self._points.append((at, progress.done))
        while len(self._points) > 2 and at - self._points[1][0] >= self.window_s:
            self._points.popleft()
        return replace(progress, eta_s=self._eta(progress))

    def _eta(self, p: DdlProgress) -> float | None:
        if not p.total or p.done is None or len(self._points) < 2:
            return None
        (t0, d0), (t1, d1) = self._points[0], self._points[-1]
        if t1 <= t0 or d1 <= d0:
            return None
        rate = (d1 - d0) / (t1 - t0)
        return round(max(0.0, (p.total - p.done) / rate), 1)

"""Instrumentation of one SQLAlchemy pool: counters, wait times, and the checkout ledger.

Attach with `instrument(engine, "main")` (an `AsyncEngine` or a plain `Engine`); the host
changes nothing else. What is hooked, all on the pool *instance* (never the class):

- `pool.connect`: the only place to see a caller *waiting* for a connection and the pool
  limit error, neither of which SQLAlchemy counts. Every checkout records its wait time
  and a ledger entry (origin stack, asyncio task, checkout time); the waiter bookkeeping
  (who waits since when, from which task and line) is paid only by callers that arrive
  when every slot is taken.
  "waiting" = callers queued for a slot; callers opening a new connection are
  "connecting". (Threaded `Engine` pools count both as waiting.)
- `pool._return_conn`: every checkin ends there; dropping the ledger entry here costs a
  third of a `checkin` event dispatch. (Pool classes without it get the public event.)
- `Engine.dispose`: it swaps in a new pool, which is wrapped in turn. (Not the
  `engine_disposed` event: any Engine-level listener sets `engine._has_events`, which
  moves every statement of the application onto SQLAlchemy's slower dispatching path.)
- pool events `connect`, `close`, `close_detached`, `detach`, `invalidate`,
  `soft_invalidate`: backend pid per physical connection (read from the driver at connect
  time, no round trip, kept in the record's `info`), closes, invalidations.

The instrumentation never raises into the host: the pool's own exceptions pass through
unchanged, ours are counted (`errors_total`) and logged. Its cost is measured by
bench/bench_pool_overhead.py: about 4 µs per checkout, most of it the Python bookkeeping
here; the ledger entry and its origin stack come from one call into the C extension
`_framewalk.c` (origin.checkout_entry), which walks the frames without Python attribute
lookups.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, Pool, PoolProxiedConnection, QueuePool, StaticPool

from dashboard.pool import origin
from dashboard.pool.histogram import WAIT_BUCKETS, Histogram

log = logging.getLogger(__name__)

INFO_PID = "dashboard.backend_pid"
INFO_APP = "dashboard.application_name"
INFO_CONNECTED_AT = "dashboard.connected_at"

RECENTLY_CLOSED_S = 30.0

TimeoutHook = Callable[["PoolInstrument", BaseException], None]

_monotonic = time.monotonic
_wall = time.time
_capture = origin.capture
_entry = origin.checkout_entry
_PRESSURE_WAIT_S = 0.0005  # a checkout that waited longer than this was under pressure
_FIRST_BOUND = WAIT_BUCKETS[0]  # waits below it need no bucket lookup


# What the checkout path stores per checked-out connection: a plain tuple, because
# building an object there costs more than everything else it does.
# (seq, checked_out_mono, wait_s, task_ref, thread, stack)
RawEntry = tuple[int, float, float, Any, Any, origin.RawStack]


class LedgerEntry:
    """One checked-out connection, for reading. Everything heavy is resolved lazily."""

    __slots__ = (
        "seq",
        "record",
        "checked_out_mono",
        "wait_s",
        "task_ref",
        "thread",
        "stack",
        "_task_name",
        "_frames",
        "_request",
    )

    def __init__(self, record: ConnectionPoolEntry, raw: RawEntry) -> None:
        self.record = record
        self.seq, self.checked_out_mono, self.wait_s, self.task_ref, self.thread, self.stack = raw
        self._task_name: str | None = None
        self._frames: list[origin.Frame] | None = None
        self._request: str | None | bool = False  # False: not looked up yet

    @property
    def backend_pid(self) -> int | None:
        pid = self.record.info.get(INFO_PID)
        return pid if isinstance(pid, int) else None

    @property
    def task_name(self) -> str | None:
        if self._task_name is None:
            task = self.task()
            if task is not None:
                self._task_name = task.get_name()
        return self._task_name

    def held_for(self, now_mono: float | None = None) -> float:
        return max(
            0.0, (now_mono if now_mono is not None else _monotonic()) - self.checked_out_mono
        )

    def checked_out_at(self) -> float:
        """Wall-clock time of the checkout."""
        return _wall() - self.held_for()

    def frames(self) -> list[origin.Frame]:
        if self._frames is None:
            self._frames = origin.resolve(self.stack)
        return self._frames

    def origin(self) -> origin.Frame | None:
        if not self.stack:
            return origin.live_origin(self.task())
        return origin.origin_of(self.frames())

    @property
    def origin_is_live(self) -> bool:
        """True when no checkout stack was captured and `origin()` is where the holder is
        suspended now (same task, usually the same function, maybe a later line)."""
        return not self.stack

    def task(self) -> Any:
        return self.task_ref() if self.task_ref is not None else None

    def request(self) -> str | None:
        if self._request is False:
            self._request = origin.request_of(self.task())
        return self._request if isinstance(self._request, str) else None

    def in_transaction(self) -> bool | None:
        return in_transaction(self.record)


@dataclass
class PoolStats:
    name: str
    pool_class: str
    size: int | None
    max_overflow: int | None
    limit: int | None
    checked_in: int
    checked_out: int
    overflow: int
    waiting: int
    connecting: int  # checkouts opening a new connection (slot reserved, not yet in use)
    longest_wait_s: float
    timeout_s: float | None
    recycle_s: float | None
    pre_ping: bool
    checkouts_total: int
    connects_total: int
    closes_total: int
    invalidations_total: int
    timeouts_total: int
    checkout_errors_total: int
    errors_total: int
    peak_checked_out: int
    peak_waiting: int
    last_timeout_at: float | None
    tracked: int
    wait: Histogram = field(repr=False)
    counting_since: float | None = None  # wall clock: the totals count from here

    @property
    def untracked_checked_out(self) -> int:
        """Checked out before the instrumentation was attached (no ledger entry)."""
        return max(0, self.checked_out - self.tracked - self.connecting)


class PoolInstrument:
    def __init__(self, engine: Engine, name: str = "main", *, stack_depth: int = 12) -> None:
        self.name = name
        self.engine = engine
        self._stack_depth = stack_depth
        self._always_capture = True
        self._always_depth = stack_depth  # what the hot path reads: depth when always, else 0
        self.on_timeout: list[TimeoutHook] = []
        self.ledger: dict[ConnectionPoolEntry, RawEntry] = {}
        self._views: dict[int, LedgerEntry] = {}
        self.physical: dict[ConnectionPoolEntry, int | None] = {}
        self.recently_closed: dict[int, float] = {}
        self.application_names: set[str] = set()
        # Wait times: the hot path adds to the sum and counts (via `_seq`) every checkout;
        # only waits past the first bucket are bucketed (`_slow`). `wait` rebuilds the whole
        # histogram on read.
        self._wait_sum = 0.0
        self._slow = Histogram(WAIT_BUCKETS)
        self._inflight = 0  # checkouts in progress (waiting or connecting)
        self._untracked = 0  # checked out before we attached, not yet returned
        self._slots: float = float("inf")  # pool_size + max_overflow
        self._room: float = float("inf")  # _slots - _untracked: slots the ledger can fill
        self._seq = 0
        self.connects_total = 0
        self.closes_total = 0
        self.invalidations_total = 0
        self.timeouts_total = 0
        self.checkout_errors_total = 0
        self.errors_total = 0
        self.peak_checked_out = 0
        self.peak_waiting = 0
        self.window_peak_checked_out = 0
        self.window_peak_waiting = 0
        self.last_timeout_at: float | None = None
        self._waiters: dict[int, float] = {}
        # Who waits (task or thread, stack), for the Pool page's list of waiters: recorded
        # only on the queued path (every slot taken), never on an ordinary checkout.
        # token -> RawEntry (token, queued_at_mono, 0.0, task_ref, thread, stack)
        self._waiting_who: dict[int, RawEntry] = {}
        self._tokens = itertools.count(1)
        self.attached_at: float | None = None  # wall clock: the counters count from here
        self._pool: Pool | None = None
        self._orig_connect: Callable[[], PoolProxiedConnection] | None = None
        self._orig_return: Callable[[ConnectionPoolEntry], None] | None = None
        self._patched: list[tuple[Any, str, Any, Any, bool]] = []
        self._lock: threading.Lock | None = None
        self._asyncio = False
        self._attached = False
        self._error_log_count = 0
        self._listeners: list[tuple[Any, str, Callable[..., Any]]] = []
        self._orig_dispose: Callable[..., None] | None = None

    @property
    def stack_depth(self) -> int:
        """Frames kept per checkout (0: no stacks)."""
        return self._stack_depth

    @stack_depth.setter
    def stack_depth(self, value: int) -> None:
        self._stack_depth = max(0, int(value))
        self._always_depth = self._stack_depth if self._always_capture else 0

    @property
    def always_capture(self) -> bool:
        """True (default): a stack on every checkout. False: only under pressure (another
        connection already out, or this checkout waited); an idle pool's checkout then
        reads its origin live from the holding task (`LedgerEntry.origin_is_live`)."""
        return self._always_capture

    @always_capture.setter
    def always_capture(self, value: bool) -> None:
        self._always_capture = bool(value)
        self._always_depth = self._stack_depth if self._always_capture else 0

    # --- attach / detach --------------------------------------------------------------

    def attach(self) -> PoolInstrument:
        if self._attached:
            return self
        hooks: list[tuple[Any, str, Callable[..., Any]]] = [
            (self.engine, "connect", self._on_connect),
            (self.engine, "close", self._on_close),
            (self.engine, "close_detached", self._on_close_detached),
            (self.engine, "detach", self._on_detach),
            (self.engine, "invalidate", self._on_invalidate),
            (self.engine, "soft_invalidate", self._on_invalidate),
        ]
        for target, name, fn in hooks:
            event.listen(target, name, fn)
        self._listeners = hooks
        self._wrap(self.engine.pool)
        # Engine.dispose() swaps in a new pool. Not the `engine_disposed` event: any
        # Engine-level listener sets `engine._has_events`, which puts every statement of
        # the application on SQLAlchemy's slower event-dispatching path.
        self._orig_dispose = self.engine.dispose
        self.engine.dispose = self._dispose  # type: ignore[method-assign]
        self._attached = True
        if self.attached_at is None:
            self.attached_at = _wall()
        return self

    def detach(self) -> None:
        """Remove every hook (tests and benchmarks); the pool works exactly as before."""
        if not self._attached:
            return
        for target, name, fn in self._listeners:
            try:
                event.remove(target, name, fn)
            except Exception:
                log.debug("removing %s listener failed", name, exc_info=True)
        self._listeners = []
        self._unwrap()
        if vars(self.engine).get("dispose") == self._dispose:
            del self.engine.dispose
        self._attached = False
        _INSTRUMENTS.pop(self.engine, None)

    @property
    def attached(self) -> bool:
        return self._attached

    @property
    def pool(self) -> Pool:
        return self.engine.pool

    def _wrap(self, pool: Pool) -> None:
        if self._pool is pool:
            return
        if self._pool is not None:
            self._unwrap()
        self._asyncio = bool(getattr(pool, "_is_asyncio", False))
        self._lock = None if self._asyncio else threading.Lock()
        self._slots, self._untracked = _slots_of(pool)
        self._room = self._slots - self._untracked
        connect = self._connect_async if self._asyncio else self._connect_threaded
        self._orig_connect = _patch(pool, "connect", connect, self._patched)
        # The return path: `_return_conn` is what every checkin calls after the public
        # `checkin` event; hooking it directly costs a third of the event dispatch.
        if callable(getattr(pool, "_return_conn", None)):
            self._orig_return = _patch(pool, "_return_conn", self._return_conn, self._patched)
        else:  # some other pool implementation: the public event
            event.listen(pool, "checkin", self._on_checkin)
            self._listeners.append((pool, "checkin", self._on_checkin))
        self._pool = pool

    def _unwrap(self) -> None:
        pool = self._pool
        if pool is None:
            return
        for target, name, replacement, original, had_own in self._patched:
            if vars(target).get(name) == replacement:
                if had_own:
                    setattr(target, name, original)
                else:
                    delattr(target, name)
        self._patched = []
        self._pool = None
        self._orig_connect = None
        self._orig_return = None

    def ensure_current_pool(self) -> None:
        """Re-wrap if the engine's pool was replaced without the dispose event."""
        if self._attached and self.engine.pool is not self._pool:
            self._wrap(self.engine.pool)

    # --- the checkout path (hot) ------------------------------------------------------

    def _connect_async(self) -> PoolProxiedConnection:
        # Hot path: every checkout of the host application runs through here. Written
        # flat on purpose: each avoided call, lookup or object is measurable (bench/).
        orig = self._orig_connect
        if orig is None:  # unwrapped while a reference to this wrapper was held
            return self.engine.pool.connect()
        t0 = _monotonic()
        ledger = self.ledger
        if len(ledger) + self._inflight >= self._room:
            # Every slot is taken: this caller will queue. Only here do we pay for the
            # waiter bookkeeping (single event loop: nothing runs between this check
            # and the pool's own decision to wait).
            fairy = self._connect_queued(orig, t0)
        else:
            self._inflight += 1
            try:
                fairy = orig()
            except BaseException as exc:
                self._inflight -= 1
                self._checkout_failed(exc)
                raise
            self._inflight -= 1
        try:
            now = _monotonic()
            wait = now - t0
            self._wait_sum += wait
            if wait >= _FIRST_BOUND:
                self._slow.observe(wait)
            seq = self._seq = self._seq + 1
            # One C call (origin.checkout_entry): task, stack, tuple. A stack on every
            # checkout by default; with `always_capture = False` only under pressure.
            ledger[fairy._connection_record] = _entry(  # type: ignore[attr-defined]
                seq, now, wait, self._always_depth or self._pressure_depth(len(ledger), wait)
            )
            if len(ledger) > self.window_peak_checked_out:
                self._note_checked_out(len(ledger))
        except Exception:
            self._own_error("checkout")
        return fairy

    def _pressure_depth(self, others_out: int, wait: float) -> int:
        """Frames to keep when stacks are taken only under pressure."""
        return self._stack_depth if others_out or wait > _PRESSURE_WAIT_S else 0

    def _connect_queued(
        self, orig: Callable[[], PoolProxiedConnection], t0: float
    ) -> PoolProxiedConnection:
        token = next(self._tokens)
        waiters = self._waiters
        waiters[token] = t0
        self._inflight += 1
        if len(waiters) > self.window_peak_waiting:
            self._note_waiting(len(waiters))
        who = self._waiting_who
        try:
            # task and stack of the waiter (one C call), paid only by queued callers
            who[token] = _entry(token, t0, 0.0, self._stack_depth)
        except Exception:
            self._own_error("waiter")
        try:
            return orig()
        except BaseException as exc:
            # Still counted as waiting while the freeze-frame hook looks at the pool.
            self._checkout_failed(exc)
            raise
        finally:
            waiters.pop(token, None)
            who.pop(token, None)
            self._inflight -= 1

    def _connect_threaded(self) -> PoolProxiedConnection:
        """Plain `Engine` pools, used from threads: the same, under a lock."""
        orig = self._orig_connect
        if orig is None:
            return self.engine.pool.connect()
        t0 = _monotonic()
        token = next(self._tokens)
        # The stack is taken before the checkout (the caller's frames are the same either
        # way), so a caller that has to wait is listed with it while it waits.
        stack: origin.RawStack = ()
        thread: str | None = None
        try:
            stack = _capture(self._stack_depth) if self._stack_depth else ()
            thread = threading.current_thread().name
            self._waiting_who[token] = (token, t0, 0.0, None, thread, stack)
        except Exception:
            self._own_error("waiter")
        self._waiters[token] = t0
        if len(self._waiters) > self.window_peak_waiting:
            self._note_waiting(len(self._waiters))
        try:
            fairy = orig()
        except BaseException as exc:
            self._checkout_failed(exc)
            self._waiters.pop(token, None)
            self._waiting_who.pop(token, None)
            raise
        self._waiters.pop(token, None)
        self._waiting_who.pop(token, None)
        try:
            now = _monotonic()
            wait = now - t0
            assert self._lock is not None
            with self._lock:
                self._wait_sum += wait
                if wait >= _FIRST_BOUND:
                    self._slow.observe(wait)
                ledger = self.ledger
                rec = fairy._connection_record  # type: ignore[attr-defined]
                self._seq += 1
                ledger[rec] = (self._seq, now, wait, None, thread, stack)
                if len(ledger) > self.window_peak_checked_out:
                    self._note_checked_out(len(ledger))
        except Exception:
            self._own_error("checkout")
        return fairy

    def _return_conn(self, record: ConnectionPoolEntry) -> None:
        try:
            if self.ledger.pop(record, None) is None and self._untracked:
                self._untracked -= 1  # one checked out before we attached came back
                self._room = self._slots - self._untracked
        except Exception:
            self._own_error("checkin")
        orig = self._orig_return
        if orig is not None:
            orig(record)
        else:  # unwrapped while a reference to this wrapper was held
            type(self.engine.pool)._return_conn(self.engine.pool, record)

    def _note_checked_out(self, n: int) -> None:
        self.window_peak_checked_out = max(self.window_peak_checked_out, n)
        self.peak_checked_out = max(self.peak_checked_out, n)

    @property
    def checkouts_total(self) -> int:
        return self._seq

    @property
    def wait(self) -> Histogram:
        """Checkout wait times: every successful checkout, bucketed."""
        hist = Histogram(WAIT_BUCKETS)
        slow = list(self._slow.counts)
        hist.counts = slow
        slow[0] = max(0, self._seq - sum(slow[1:]))
        hist.sum = self._wait_sum
        return hist

    def _note_waiting(self, n: int) -> None:
        self.window_peak_waiting = max(self.window_peak_waiting, n)
        self.peak_waiting = max(self.peak_waiting, n)

    def _checkout_failed(self, exc: BaseException) -> None:
        try:
            if isinstance(exc, sa_exc.TimeoutError):
                self.timeouts_total += 1
                self.last_timeout_at = _wall()
                for hook in list(self.on_timeout):
                    try:
                        hook(self, exc)
                    except Exception:
                        self._own_error("timeout hook")
            elif isinstance(exc, Exception):
                self.checkout_errors_total += 1
        except Exception:
            self._own_error("checkout failure")

    # --- pool events ------------------------------------------------------------------

    def _on_connect(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        try:
            self.connects_total += 1
            pid = backend_pid_of(dbapi_connection)
            record.info[INFO_PID] = pid
            record.info[INFO_CONNECTED_AT] = _wall()
            app = application_name_of(dbapi_connection)
            if app is not None:
                record.info[INFO_APP] = app
                self.application_names.add(app)
            self.physical[record] = pid
            self.ensure_current_pool()
        except Exception:
            self._own_error("connect")

    def _on_checkin(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        """Only for pool classes without `_return_conn` (see `_wrap`)."""
        try:
            self.ledger.pop(record, None)
        except Exception:
            self._own_error("checkin")

    def _on_close(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        try:
            self.closes_total += 1
            self._forget(self.physical.pop(record, None))
        except Exception:
            self._own_error("close")

    def _on_close_detached(self, dbapi_connection: Any) -> None:
        try:
            self.closes_total += 1
            self._forget(backend_pid_of(dbapi_connection) if dbapi_connection else None)
        except Exception:
            self._own_error("close")

    def _forget(self, pid: int | None) -> None:
        """A closed backend may still be in the server sample for a moment: remember it
        briefly so it is not counted as another process's connection."""
        if pid is None:
            return
        now = _wall()
        self.recently_closed[pid] = now
        if len(self.recently_closed) > 256:
            cutoff = now - RECENTLY_CLOSED_S
            for old in [p for p, t in self.recently_closed.items() if t < cutoff]:
                self.recently_closed.pop(old, None)

    def _on_detach(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        try:
            self.ledger.pop(record, None)
            self.physical.pop(record, None)
        except Exception:
            self._own_error("detach")

    def _on_invalidate(
        self, dbapi_connection: Any, record: ConnectionPoolEntry, exception: BaseException | None
    ) -> None:
        self.invalidations_total += 1

    def _dispose(self, close: bool = True) -> None:
        orig = self._orig_dispose
        if orig is None:
            type(self.engine).dispose(self.engine, close=close)
        else:
            orig(close=close)
        try:
            self.ensure_current_pool()
        except Exception:
            self._own_error("dispose")

    def _own_error(self, where: str) -> None:
        self.errors_total += 1
        self._error_log_count += 1
        if self._error_log_count <= 5 or self._error_log_count % 1000 == 0:
            log.exception(
                "pool instrumentation error in %s (pool %r, %d so far); the application is not affected",
                where,
                self.name,
                self.errors_total,
            )

    # --- reading ----------------------------------------------------------------------

    def waiting(self) -> int:
        return len(self._waiters)

    def waiting_raw(self) -> list[RawEntry]:
        """Who waits for a connection now, longest first (see dashboard/pool/waiter.py)."""
        return sorted(list(self._waiting_who.values()), key=lambda r: r[1])

    def longest_wait(self, now_mono: float | None = None) -> float:
        waiters = list(self._waiters.values())
        if not waiters:
            return 0.0
        now = now_mono if now_mono is not None else _monotonic()
        return max(0.0, now - min(waiters))

    def entries(self) -> list[LedgerEntry]:
        """Checked-out connections, longest held first (lazy views, cached per checkout)."""
        views = self._views
        out: list[LedgerEntry] = []
        for rec, raw in list(self.ledger.items()):
            view = views.get(raw[0])
            if view is None or view.record is not rec:
                view = views[raw[0]] = LedgerEntry(rec, raw)
            out.append(view)
        live = {v.seq for v in out}
        for seq in [s for s in views if s not in live]:
            views.pop(seq, None)
        out.sort(key=lambda e: e.checked_out_mono)
        return out

    def entry(self, seq: int) -> LedgerEntry | None:
        for e in self.entries():
            if e.seq == seq:
                return e
        return None

    def physical_pids(self) -> set[int]:
        return {pid for pid in list(self.physical.values()) if pid is not None}

    def own_pids(self) -> set[int]:
        """Backends this pool has open, or closed within the last few seconds."""
        cutoff = _wall() - RECENTLY_CLOSED_S
        recent = {p for p, t in list(self.recently_closed.items()) if t >= cutoff}
        return self.physical_pids() | recent

    def take_window_peaks(self) -> tuple[int, int]:
        """Peaks since the last call (for the history chart), then reset to current values."""
        co, wt = self.window_peak_checked_out, self.window_peak_waiting
        self.window_peak_checked_out = len(self.ledger)
        self.window_peak_waiting = len(self._waiters)
        return co, wt

    def stats(self) -> PoolStats:
        self.ensure_current_pool()
        pool = self.engine.pool
        tracked = len(self.ledger)
        size: int | None
        max_overflow: int | None
        limit: int | None
        if isinstance(pool, QueuePool):
            size = pool.size()
            max_overflow = int(getattr(pool, "_max_overflow", 0))
            checked_in = pool.checkedin()
            checked_out = pool.checkedout()
            overflow = max(0, pool.overflow())
            limit = None if max_overflow < 0 or size == 0 else size + max_overflow
            if size == 0:
                size, max_overflow = None, None
        elif isinstance(pool, StaticPool):
            size, max_overflow, limit = 1, 0, None
            checked_out = 1 if tracked else 0
            checked_in = 1 - checked_out if getattr(pool, "_conn", None) is not None else 0
            overflow = 0
        else:  # NullPool, SingletonThreadPool, ...: only what the ledger knows applies
            size, max_overflow, limit = None, None, None
            checked_out, checked_in, overflow = tracked, 0, 0
        timeout = getattr(pool, "_timeout", None) if isinstance(pool, QueuePool) else None
        recycle = float(getattr(pool, "_recycle", -1))
        return PoolStats(
            name=self.name,
            pool_class=type(pool).__name__,
            size=size,
            max_overflow=max_overflow,
            limit=limit,
            checked_in=checked_in,
            checked_out=checked_out,
            overflow=overflow,
            waiting=self.waiting(),
            connecting=max(0, self._inflight - self.waiting()),
            longest_wait_s=self.longest_wait(),
            timeout_s=float(timeout) if timeout is not None else None,
            recycle_s=recycle if recycle >= 0 else None,
            pre_ping=bool(getattr(pool, "_pre_ping", False)),
            checkouts_total=self.checkouts_total,
            connects_total=self.connects_total,
            closes_total=self.closes_total,
            invalidations_total=self.invalidations_total,
            timeouts_total=self.timeouts_total,
            checkout_errors_total=self.checkout_errors_total,
            errors_total=self.errors_total,
            peak_checked_out=self.peak_checked_out,
            peak_waiting=self.peak_waiting,
            last_timeout_at=self.last_timeout_at,
            tracked=tracked,
            wait=self.wait,
            counting_since=self.attached_at,
        )


def _slots_of(pool: Pool) -> tuple[float, int]:
    """(pool_size + max_overflow or infinity, connections already checked out)."""
    if isinstance(pool, QueuePool):
        size, max_overflow = pool.size(), int(getattr(pool, "_max_overflow", -1))
        limit = float("inf") if size == 0 or max_overflow < 0 else float(size + max_overflow)
        return limit, max(0, pool.checkedout())
    return float("inf"), 0


def _patch(target: Any, name: str, replacement: Any, log_to: list[Any]) -> Any:
    """Set an attribute on one instance (never the class); remember how to undo it."""
    had_own = name in vars(target)
    original = getattr(target, name)
    setattr(target, name, replacement)
    log_to.append((target, name, replacement, original, had_own))
    return original


# --- driver helpers (no I/O) ----------------------------------------------------------


def _driver(dbapi_connection: Any) -> Any:
    return getattr(dbapi_connection, "driver_connection", None) or dbapi_connection


def backend_pid_of(dbapi_connection: Any) -> int | None:
    """Server pid of a fresh connection, from what the driver already knows."""
    drv = _driver(dbapi_connection)
    get_server_pid = getattr(drv, "get_server_pid", None)  # asyncpg
    if callable(get_server_pid):
        return int(get_server_pid())
    info = getattr(drv, "info", None)  # psycopg 3
    pid = getattr(info, "backend_pid", None)
    if isinstance(pid, int):
        return pid
    get_backend_pid = getattr(drv, "get_backend_pid", None)  # psycopg2
    if callable(get_backend_pid):
        return int(get_backend_pid())
    return None


def application_name_of(dbapi_connection: Any) -> str | None:
    drv = _driver(dbapi_connection)
    get_settings = getattr(drv, "get_settings", None)  # asyncpg: server-reported parameters
    if callable(get_settings):
        value = getattr(get_settings(), "application_name", None)
        return str(value) if value is not None else None
    info = getattr(drv, "info", None)  # psycopg 3
    parameter_status = getattr(info, "parameter_status", None)
    if callable(parameter_status):
        value = parameter_status("application_name")
        return str(value) if value is not None else None
    get_parameter_status = getattr(drv, "get_parameter_status", None)  # psycopg2
    if callable(get_parameter_status):
        value = get_parameter_status("application_name")
        return str(value) if value is not None else None
    return None


def in_transaction(record: ConnectionPoolEntry) -> bool | None:
    """Whether the driver connection has a transaction open (client-side view, no I/O)."""
    try:
        drv = record.driver_connection
        if drv is None:
            return None
        is_in_transaction = getattr(drv, "is_in_transaction", None)  # asyncpg
        if callable(is_in_transaction):
            return bool(is_in_transaction())
        status = getattr(getattr(drv, "info", None), "transaction_status", None)  # psycopg 3
        if status is not None:
            return int(status) != 0
        get_status = getattr(drv, "get_transaction_status", None)  # psycopg2
        if callable(get_status):
            return int(get_status()) != 0
    except Exception:
        return None
    return None


# --- attach ---------------------------------------------------------------------------

_INSTRUMENTS: weakref.WeakKeyDictionary[Engine, PoolInstrument] = weakref.WeakKeyDictionary()
_walker_warned = False


def sync_engine_of(engine: AsyncEngine | Engine) -> Engine:
    return engine.sync_engine if isinstance(engine, AsyncEngine) else engine


def instrument(
    engine: AsyncEngine | Engine, name: str = "main", *, stack_depth: int = 12
) -> PoolInstrument:
    """Attach (once per engine) and return the engine's instrument.

    Several dashboards in one process observing the same engine share one instrument.
    """
    sync = sync_engine_of(engine)
    existing = _INSTRUMENTS.get(sync)
    if existing is not None and existing.attached:
        return existing
    inst = PoolInstrument(sync, name, stack_depth=stack_depth).attach()
    _INSTRUMENTS[sync] = inst
    global _walker_warned
    if origin.WALKER != "c" and not _walker_warned:
        _walker_warned = True
        log.warning(
            "pool instrumentation: the C stack walker (dashboard/pool/_framewalk.c) was not "
            "built, so each checkout's origin is walked in Python (about 3 µs more per "
            "checkout); reinstall with a C compiler available to build it"
        )
    return inst


def instrument_of(engine: AsyncEngine | Engine) -> PoolInstrument | None:
    return _INSTRUMENTS.get(sync_engine_of(engine))


__all__ = [
    "LedgerEntry",
    "PoolInstrument",
    "PoolStats",
    "backend_pid_of",
    "in_transaction",
    "instrument",
    "instrument_of",
]

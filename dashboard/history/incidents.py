"""Incidents, detected: lock pile-ups, pool exhaustion and long idle-in-transaction sessions.

Pure: `IncidentDetector.observe()` is fed one `Observation` per sampler cycle (the server
`Snapshot`, the pools' counters and ledgers, the latest freeze-frame of each pool) and
returns what happened to incidents in that cycle: `open`, `update` or `close` events, each
carrying the whole incident as it stands (`Incident`, frozen). No I/O and no clock of its
own: the time is the observation's. The writer (incident_service.py) stores the events;
the detector never waits for it.

The kinds:

- `lock_pileup`: at least `min_blocked` sessions wait (directly or transitively) behind
  ONE root blocker, sustained for `min_s` seconds; key = root pid + backend_start. It
  starts when the pile-up was first seen that large, and ends when the root blocks nobody
  any more (not merely fewer than `min_blocked`: a pile-up that shrinks is still the same
  incident, one that flaps around the threshold is not many). Peak = the largest blast
  radius, with the lock tree under the root at that moment.
- `pool_exhausted`: an observed pool has callers waiting for a connection, or its
  `timeouts_total` grew since the last cycle; key = service/instance/pool. It ends once
  the pool has had no waiter and no new timeout for `pool_grace_s` (ended_at = the first
  calm cycle). Peak = most waiters, with the ledger of who held the connections and the
  freeze-frame of a timeout when one was taken during the incident. Root = the
  connection held longest (its backend pid and the line of code that took it).
- `idle_in_transaction`: a session idle in transaction for longer than
  `idle_in_transaction_s` (settings.leak_threshold_s, 60 s by default: the same limit past
  which the pool page calls a held connection a leak suspect; `long_query_s` is about
  statements that run, not about transactions nobody drives); key = pid + backend_start.
  It started when the session went idle in that transaction and ends when that
  transaction ends (or the session goes). Peak = the most sessions it blocked.

Incidents left open by an earlier process are `adopt()`ed at start-up: the next
observation continues those still going, and closes the others with ended_at = their last
`updated_at` and the note `ADOPTED_NOTE`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from dashboard.formatting import duration, truncate_query
from dashboard.server.model import Session
from dashboard.server.snapshot import Snapshot

LOCK_PILEUP = "lock_pileup"
POOL_EXHAUSTED = "pool_exhausted"
IDLE_IN_TRANSACTION = "idle_in_transaction"
KINDS = (LOCK_PILEUP, POOL_EXHAUSTED, IDLE_IN_TRANSACTION)
KIND_LABELS = {
    LOCK_PILEUP: "lock pile-up",
    POOL_EXHAUSTED: "pool exhausted",
    IDLE_IN_TRANSACTION: "idle in transaction",
}

ADOPTED_NOTE = "ended while the dashboard was not watching"
QUERY_CHARS = 500  # query text kept per session in the stored root and tree
MAX_PEAK_NODES = 200  # sessions kept in the stored tree at the peak
MAX_HOLDERS = 50  # pool ledger rows kept at the peak

Action = Literal["open", "update", "close"]


# --- inputs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Holder:
    """One checked-out connection of an observed pool (the pool ledger)."""

    backend_pid: int | None
    held_for_s: float
    origin: str | None = None  # file:line in function, where the connection was taken
    task: str | None = None
    doing: str | None = None  # what its backend does, in words (dashboard/pool/join.py)
    in_transaction: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "backend_pid": self.backend_pid,
            "held_for_s": round(self.held_for_s, 3),
            "origin": self.origin,
            "task": self.task,
            "doing": self.doing,
            "in_transaction": self.in_transaction,
        }


@dataclass(frozen=True)
class FrameInfo:
    """The latest freeze-frame of a pool (dashboard/pool/freeze.py), trimmed."""

    id: int
    at: float  # epoch seconds of its first timeout
    error: str
    timeouts: int
    waiting: int
    checked_out: int | None
    complete: bool
    holders: tuple[Holder, ...] = ()
    notes: tuple[str, ...] = ()
    server_error: str | None = None
    blocked_count: int | None = None  # sessions waiting on locks in its server sample

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _iso_ts(self.at),
            "error": self.error,
            "timeouts": self.timeouts,
            "waiting": self.waiting,
            "checked_out": self.checked_out,
            "complete": self.complete,
            "connections": [h.to_json() for h in self.holders[:MAX_HOLDERS]],
            "notes": list(self.notes),
            "server_error": self.server_error,
            "blocked_count": self.blocked_count,
        }


@dataclass(frozen=True)
class PoolReading:
    """One observed pool's counters and ledger at one cycle."""

    name: str
    waiting: int
    timeouts_total: int
    checked_out: int = 0
    size: int | None = None
    limit: int | None = None
    longest_wait_s: float = 0.0
    holders: tuple[Holder, ...] = ()  # longest held first
    frame: FrameInfo | None = None  # the pool's latest freeze-frame, if any


@dataclass(frozen=True)
class Observation:
    """What one sampler cycle saw. `at`: when (UTC); `snapshot`: None when only pools."""

    at: datetime
    snapshot: Snapshot | None
    pools: tuple[PoolReading, ...] = ()
    origins: Mapping[int, str] = field(default_factory=dict)  # backend pid -> code origin


@dataclass(frozen=True)
class Thresholds:
    min_blocked: int = 3
    min_s: float = 5.0
    idle_in_transaction_s: float = 60.0
    pool_grace_s: float = 5.0
    heartbeat_s: float = 30.0  # an open incident's updated_at is refreshed at least this often


# --- the incident -------------------------------------------------------------------------
@dataclass(frozen=True)
class IncidentRoot:
    """Who the incident is about: the root blocker, the idle session, the longest holder."""

    pid: int | None
    backend_start: str | None = None
    user: str | None = None
    application: str | None = None
    client: str | None = None
    query: str | None = None
    state: str | None = None
    xact_age_s: float | None = None
    state_age_s: float | None = None
    wait_target: str | None = None
    origin: str | None = None  # code that took the connection, when the pool ledger knows
    pool: str | None = None
    held_for_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "backend_start": self.backend_start,
            "user": self.user,
            "application": self.application,
            "client": self.client,
            "query": self.query,
            "state": self.state,
            "xact_age_s": _r(self.xact_age_s),
            "state_age_s": _r(self.state_age_s),
            "wait_target": self.wait_target,
            "origin": self.origin,
            "pool": self.pool,
            "held_for_s": _r(self.held_for_s),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> IncidentRoot | None:
        if not data:
            return None

        def text(name: str) -> str | None:
            v = data.get(name)
            return None if v is None else str(v)

        def num(name: str) -> float | None:
            v = data.get(name)
            return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

        pid = data.get("pid")
        return cls(
            pid=int(pid) if isinstance(pid, int) else None,
            backend_start=text("backend_start"),
            user=text("user"),
            application=text("application"),
            client=text("client"),
            query=text("query"),
            state=text("state"),
            xact_age_s=num("xact_age_s"),
            state_age_s=num("state_age_s"),
            wait_target=text("wait_target"),
            origin=text("origin"),
            pool=text("pool"),
            held_for_s=num("held_for_s"),
        )


@dataclass(frozen=True)
class Incident:
    """One incident as it stands. `local_id` identifies it within this process (the same
    kind and key can recur after it closed); `db_id` is its row once known."""

    local_id: int
    kind: str
    key: str
    started_at: datetime
    updated_at: datetime
    root: IncidentRoot | None
    peak_blast_radius: int
    peak_at: datetime | None
    peak: Mapping[str, Any]  # JSON: the lock tree, or the pool ledger and freeze-frame
    summary: str
    ended_at: datetime | None = None
    note: str | None = None
    db_id: int | None = None

    @property
    def open(self) -> bool:
        return self.ended_at is None

    @property
    def root_pid(self) -> int | None:
        return self.root.pid if self.root is not None else None

    def duration_s(self, now: datetime | None = None) -> float:
        end = self.ended_at or now or self.updated_at
        return max(0.0, (end - self.started_at).total_seconds())


@dataclass(frozen=True)
class IncidentEvent:
    action: Action
    incident: Incident


# --- summaries ----------------------------------------------------------------------------
def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _who(root: IncidentRoot | None, *, with_state: bool = True) -> str:
    if root is None or root.pid is None:
        return "an unknown session"
    bits: list[str] = []
    if with_state and root.state:
        bits.append(root.state)
    if root.application:
        bits.append(f"app {root.application}")
    elif root.user:
        bits.append(f"user {root.user}")
    head = "a prepared transaction" if root.pid == 0 else f"pid {root.pid}"
    return f"{head} ({', '.join(bits)})" if bits else head


def summarize(inc: Incident) -> str:
    """One plain sentence: "pid 123 (idle in transaction, app web) blocked 7 sessions for
    42s". Open incidents say "so far"; adopted ones that ended unseen say so."""
    d = duration(int(inc.duration_s()))
    ongoing = inc.ended_at is None
    unseen = inc.note == ADOPTED_NOTE
    span = f"for at least {d}" if unseen else f"for {d}" + (" so far" if ongoing else "")
    peak = inc.peak_blast_radius
    if inc.kind == LOCK_PILEUP:
        verb = "has blocked" if ongoing else "blocked"
        text = f"{_who(inc.root)} {verb} {_plural(peak, 'session')} {span}"
    elif inc.kind == POOL_EXHAUSTED:
        pool = inc.peak.get("pool") or (inc.root.pool if inc.root else None) or "?"
        where = inc.peak.get("where")
        timeouts = int(inc.peak.get("timeouts") or 0)
        text = f"pool {pool}{f' of {where}' if where else ''} exhausted {span}: "
        text += f"up to {peak} waiting"
        if timeouts:
            text += f", {timeouts} timed out"
        root = inc.root
        if root is not None and (root.pid is not None or root.origin):
            holder = f"pid {root.pid}" if root.pid is not None else "a connection"
            if root.origin:
                holder += f" from {root.origin}"
            if root.held_for_s is not None:
                holder += f", held {duration(int(root.held_for_s))}"
            text += f"; longest holder {holder}"
    elif inc.kind == IDLE_IN_TRANSACTION:
        verb = "is idle" if ongoing else "stayed idle"
        text = f"{_who(inc.root, with_state=False)} {verb} in transaction {span}"
        if peak:
            text += f", blocking up to {_plural(peak, 'session')}"
        if inc.root is not None and inc.root.origin:
            text += f" (connection taken at {inc.root.origin})"
    else:
        text = f"{inc.kind} {span}"
    if unseen:
        text += f" ({ADOPTED_NOTE})"
    return text


# --- the lock tree --------------------------------------------------------------------------
def find_subtree(roots: Sequence[Mapping[str, Any]], pid: int) -> Mapping[str, Any] | None:
    """The node of `pid` in the nested lock tree (`/api/locks` "roots"), searched
    breadth-first without recursion."""
    queue: list[Mapping[str, Any]] = list(roots)
    i = 0
    while i < len(queue):
        node = queue[i]
        i += 1
        if node.get("pid") == pid and not node.get("repeat"):
            return node
        queue.extend(node.get("blocked") or ())
    return None


_TREE_FIELDS = (
    "pid",
    "backend_start",
    "user",
    "application_name",
    "client_addr",
    "state",
    "wait_event_type",
    "wait_event",
    "xact_age_s",
    "query_age_s",
    "wait_age_s",
    "mode",
    "wait_target",
    "blast_radius",
    "repeat",
    "query",
    "origin",
)


def prune_tree(
    node: Mapping[str, Any], origins: Mapping[int, str], max_nodes: int = MAX_PEAK_NODES
) -> tuple[dict[str, Any], int]:
    """A compact copy of a lock subtree for storage: the fields shown on the incident page,
    queries shortened, at most `max_nodes` sessions (pre-order); the number of sessions
    left out. Code origins from the pool ledger are added where known. Iterative."""
    kept = 0
    dropped = 0

    def copy(n: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: n.get(k) for k in _TREE_FIELDS if k in n}
        if isinstance(out.get("query"), str):
            out["query"] = truncate_query(out["query"], QUERY_CHARS)
        pid = n.get("pid")
        if isinstance(pid, int) and pid in origins:
            out["origin"] = origins[pid]
        out["blocked"] = []
        return out

    top = copy(node)
    kept = 1
    stack: list[tuple[Mapping[str, Any], dict[str, Any]]] = [(node, top)]
    while stack:
        src, dst = stack.pop()
        for child in src.get("blocked") or ():
            if kept >= max_nodes:
                dropped += 1 + _count(child)
                continue
            c = copy(child)
            kept += 1
            dst["blocked"].append(c)
            stack.append((child, c))
    return top, dropped


def _count(node: Mapping[str, Any]) -> int:
    n = 0
    stack = list(node.get("blocked") or ())
    while stack:
        x = stack.pop()
        n += 1
        stack.extend(x.get("blocked") or ())
    return n


def flatten_tree(tree: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Pre-order rows with a `depth`, for the page (no recursion in the template)."""
    if not tree:
        return []
    rows: list[dict[str, Any]] = []
    stack: list[tuple[Mapping[str, Any], int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        row = {k: v for k, v in node.items() if k != "blocked"}
        row["depth"] = depth
        rows.append(row)
        for child in reversed(list(node.get("blocked") or ())):
            stack.append((child, depth + 1))
    return rows


# --- helpers --------------------------------------------------------------------------------
def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _iso_ts(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def session_key(s: Session | None, pid: int) -> str:
    start = s.backend_start.isoformat() if s is not None and s.backend_start else "-"
    return f"{pid}@{start}"


def root_of(
    snap: Snapshot, pid: int, origins: Mapping[int, str], *, pool: str | None = None
) -> IncidentRoot:
    s = snap.sessions.get(pid)
    if s is None or s.hidden:
        return IncidentRoot(
            pid=pid,
            backend_start=s.backend_start.isoformat() if s and s.backend_start else None,
            user=s.usename if s else None,
            application=s.application_name if s else None,
            client=s.client_addr if s else None,
            origin=origins.get(pid),
            pool=pool,
        )
    target = None
    if s.wait is not None:
        try:
            target = s.wait.target()
        except Exception:
            target = None
    return IncidentRoot(
        pid=pid,
        backend_start=s.backend_start.isoformat() if s.backend_start else None,
        user=s.usename,
        application=s.application_name or None,
        client=s.client_addr,
        query=truncate_query(s.query, QUERY_CHARS) or None,
        state=s.state,
        xact_age_s=s.xact_age_s,
        state_age_s=s.state_age_s,
        wait_target=target,
        origin=origins.get(pid),
        pool=pool,
    )


def _is_idle_in_transaction(s: Session) -> bool:
    return bool(s.state) and str(s.state).startswith("idle in transaction")


@dataclass
class _Open:
    """Book-keeping of one open incident (mutable; events carry frozen copies)."""

    incident: Incident
    last_emit: datetime
    confirmed: bool = True  # False for adopted incidents not yet seen again
    # kind-specific
    xact_start: str | None = None  # idle in transaction: the transaction it is about
    timeouts_at_open: int = 0  # pool: timeouts_total when it opened (or first seen)
    first_calm: datetime | None = None  # pool: first cycle without waiters or new timeouts
    last_active: datetime | None = None


# --- the detector ---------------------------------------------------------------------------
class IncidentDetector:
    """Turns observations into incident events. Not thread-safe: feed it from one loop."""

    def __init__(
        self,
        thresholds: Thresholds | None = None,
        *,
        service: str = "app",
        instance: str = "local",
    ) -> None:
        self.t = thresholds or Thresholds()
        self.service = service
        self.instance = instance
        self._ids = itertools.count(1)
        self._open: dict[tuple[str, str], _Open] = {}
        self._pending: dict[str, datetime] = {}  # pile-up key -> first seen at threshold
        self._timeouts: dict[str, int] = {}  # pool key -> timeouts_total last cycle

    # -- reading ---------------------------------------------------------------------------
    def open_incidents(self) -> list[Incident]:
        """Open incidents, newest first (the in-memory view, used while the state
        database is away)."""
        return sorted(
            (o.incident for o in self._open.values() if o.confirmed),
            key=lambda i: i.started_at,
            reverse=True,
        )

    def pool_key(self, pool: str) -> str:
        return f"{self.service}/{self.instance}/{pool}"

    # -- adoption --------------------------------------------------------------------------
    def adopt(self, incidents: Iterable[Incident]) -> list[Incident]:
        """Take over incidents left open by an earlier process (each with its `db_id`).
        The next observation continues those still going and closes the others. Those
        whose kind and key are already open here are skipped (the writer joins the open
        row instead). Returns the adopted incidents with their local ids."""
        out: list[Incident] = []
        for inc in incidents:
            k = (inc.kind, inc.key)
            if inc.kind not in KINDS or k in self._open or inc.ended_at is not None:
                continue
            adopted = replace(inc, local_id=next(self._ids))
            xact = adopted.peak.get("xact_start")
            self._open[k] = _Open(
                adopted,
                last_emit=adopted.updated_at,
                confirmed=False,
                xact_start=str(xact) if xact else None,
                timeouts_at_open=int(adopted.peak.get("timeouts_total_at_open") or 0),
            )
            out.append(adopted)
        return out

    # -- one cycle -------------------------------------------------------------------------
    def observe(self, obs: Observation) -> list[IncidentEvent]:
        events: list[IncidentEvent] = []
        seen: set[tuple[str, str]] = set()
        if obs.snapshot is not None:
            events += self._lock_pileups(obs, obs.snapshot, seen)
            events += self._idle_in_transaction(obs, obs.snapshot, seen)
        events += self._pools(obs, seen)
        # adopted incidents that this cycle could judge and did not see: over
        judged = {POOL_EXHAUSTED} | ({LOCK_PILEUP, IDLE_IN_TRANSACTION} if obs.snapshot else set())
        for k, o in list(self._open.items()):
            if not o.confirmed and k[0] in judged and k not in seen:
                inc = o.incident
                ended = replace(inc, ended_at=inc.updated_at, note=ADOPTED_NOTE)
                ended = replace(ended, summary=summarize(ended))
                del self._open[k]
                events.append(IncidentEvent("close", ended))
        return events

    def _emit_open(self, o: _Open, at: datetime) -> IncidentEvent:
        inc = replace(o.incident, updated_at=at)
        inc = replace(inc, summary=summarize(inc))
        o.incident, o.last_emit = inc, at
        self._open[(inc.kind, inc.key)] = o
        return IncidentEvent("open", inc)

    def _continue(
        self, k: tuple[str, str], at: datetime, changed: bool, **updates: Any
    ) -> IncidentEvent | None:
        """An open incident seen again: an update event when its peak (or root) changed,
        when it was adopted and is now confirmed, or when the heartbeat is due."""
        o = self._open[k]
        first = not o.confirmed
        o.confirmed = True
        inc = replace(o.incident, updated_at=at, **updates)
        due = (at - o.last_emit).total_seconds() >= self.t.heartbeat_s
        o.incident = inc
        if not (changed or due or first):
            return None
        inc = replace(inc, summary=summarize(inc))
        o.incident, o.last_emit = inc, at
        return IncidentEvent("update", inc)

    def _close(self, k: tuple[str, str], ended_at: datetime, at: datetime) -> IncidentEvent:
        o = self._open.pop(k)
        inc = replace(o.incident, ended_at=max(ended_at, o.incident.started_at), updated_at=at)
        inc = replace(inc, summary=summarize(inc))
        return IncidentEvent("close", inc)

    # -- lock pile-ups ---------------------------------------------------------------------
    def _lock_pileups(
        self, obs: Observation, snap: Snapshot, seen: set[tuple[str, str]]
    ) -> list[IncidentEvent]:
        at = obs.at
        events: list[IncidentEvent] = []
        blast = snap.blast_radius
        # open ones: still going while the root blocks anybody (same backend)
        for k, o in list(self._open.items()):
            if k[0] != LOCK_PILEUP:
                continue
            pid = o.incident.root_pid
            radius = blast.get(pid, 0) if pid is not None else 0
            if pid is None or radius <= 0 or session_key(snap.sessions.get(pid), pid) != k[1]:
                if o.confirmed:
                    events.append(self._close(k, at, at))
                continue
            seen.add(k)
            ev = self._pileup_peak(k, o, snap, obs, radius)
            if ev is not None:
                events.append(ev)
        # candidates: roots with enough sessions behind them
        candidates: dict[str, int] = {}
        for pid in [*snap.graph.roots, *snap.graph.cycle_roots]:
            radius = blast.get(pid, 0)
            if radius >= self.t.min_blocked:
                candidates[session_key(snap.sessions.get(pid), pid)] = pid
        for key in [k for k in self._pending if k not in candidates]:
            del self._pending[key]
        for key, pid in candidates.items():
            if (LOCK_PILEUP, key) in self._open:
                continue
            first = self._pending.setdefault(key, at)
            if (at - first).total_seconds() < self.t.min_s:
                continue
            del self._pending[key]
            radius = blast.get(pid, 0)
            tree, dropped = self._tree(snap, pid, obs.origins)
            inc = Incident(
                local_id=next(self._ids),
                kind=LOCK_PILEUP,
                key=key,
                started_at=first,
                updated_at=at,
                root=root_of(snap, pid, obs.origins),
                peak_blast_radius=radius,
                peak_at=at,
                peak=self._pileup_peak_json(snap, tree, dropped),
                summary="",
            )
            seen.add((LOCK_PILEUP, key))
            events.append(self._emit_open(_Open(inc, at), at))
        return events

    def _tree(
        self, snap: Snapshot, pid: int, origins: Mapping[int, str]
    ) -> tuple[dict[str, Any] | None, int]:
        node = find_subtree(snap.locks_json()["roots"], pid)
        if node is None:
            return None, 0
        return prune_tree(node, origins)

    @staticmethod
    def _pileup_peak_json(
        snap: Snapshot, tree: dict[str, Any] | None, dropped: int
    ) -> dict[str, Any]:
        return {
            "tree": tree,
            "not_shown": dropped,
            "blocked_count": snap.graph.blocked_count,
            "root_count": len(snap.graph.roots),
        }

    def _pileup_peak(
        self, k: tuple[str, str], o: _Open, snap: Snapshot, obs: Observation, radius: int
    ) -> IncidentEvent | None:
        inc = o.incident
        if radius > inc.peak_blast_radius or not o.confirmed:
            pid = inc.root_pid
            assert pid is not None
            tree, dropped = self._tree(snap, pid, obs.origins)
            bigger = radius > inc.peak_blast_radius
            return self._continue(
                k,
                obs.at,
                True,
                root=root_of(snap, pid, obs.origins),
                peak_blast_radius=max(radius, inc.peak_blast_radius),
                peak_at=obs.at if bigger else inc.peak_at,
                peak=self._pileup_peak_json(snap, tree, dropped) if bigger else inc.peak,
            )
        return self._continue(k, obs.at, False)

    # -- idle in transaction ---------------------------------------------------------------
    def _idle_in_transaction(
        self, obs: Observation, snap: Snapshot, seen: set[tuple[str, str]]
    ) -> list[IncidentEvent]:
        at = obs.at
        events: list[IncidentEvent] = []
        for k, o in list(self._open.items()):
            if k[0] != IDLE_IN_TRANSACTION:
                continue
            pid = o.incident.root_pid
            s = snap.sessions.get(pid) if pid is not None else None
            same = (
                s is not None
                and pid is not None
                and session_key(s, pid) == k[1]
                and s.xact_start is not None
                and (not o.xact_start or s.xact_start.isoformat() == o.xact_start)
            )
            if not same:
                if o.confirmed:
                    events.append(self._close(k, at, at))
                continue
            assert s is not None and pid is not None
            seen.add(k)
            if not o.xact_start and s.xact_start is not None:
                o.xact_start = s.xact_start.isoformat()
            radius = snap.blast_radius.get(pid, 0)
            bigger = radius > o.incident.peak_blast_radius
            ev = self._continue(
                k,
                at,
                bigger,
                root=root_of(snap, pid, obs.origins),
                peak_blast_radius=max(radius, o.incident.peak_blast_radius),
                peak_at=at if bigger else o.incident.peak_at,
                peak=self._idle_peak_json(snap, pid, obs, o.xact_start)
                if bigger
                else o.incident.peak,
            )
            if ev is not None:
                events.append(ev)
        limit = self.t.idle_in_transaction_s
        for pid, s in snap.sessions.items():
            if not _is_idle_in_transaction(s) or s.is_dashboard or s.hidden:
                continue
            if s.backend_type not in (None, "client backend"):
                continue
            if s.state_age_s is None or s.state_age_s < limit:
                continue
            key = session_key(s, pid)
            if (IDLE_IN_TRANSACTION, key) in self._open:
                continue
            if (LOCK_PILEUP, key) in self._open:
                # already the root of an open pile-up, which names it idle in transaction:
                # one incident for one stall (it becomes its own once the pile-up ends)
                continue
            xact = s.xact_start.isoformat() if s.xact_start else None
            started = at - timedelta(seconds=s.state_age_s)
            radius = snap.blast_radius.get(pid, 0)
            inc = Incident(
                local_id=next(self._ids),
                kind=IDLE_IN_TRANSACTION,
                key=key,
                started_at=started,
                updated_at=at,
                root=root_of(snap, pid, obs.origins),
                peak_blast_radius=radius,
                peak_at=at,
                peak=self._idle_peak_json(snap, pid, obs, xact),
                summary="",
            )
            seen.add((IDLE_IN_TRANSACTION, key))
            events.append(self._emit_open(_Open(inc, at, xact_start=xact), at))
        return events

    def _idle_peak_json(
        self, snap: Snapshot, pid: int, obs: Observation, xact: str | None
    ) -> dict[str, Any]:
        tree, dropped = self._tree(snap, pid, obs.origins)
        if tree is None:
            node = dict(snap.node(pid))
            node["blocked"] = []
            tree, dropped = prune_tree(node, obs.origins)
        return {"tree": tree, "not_shown": dropped, "xact_start": xact}

    # -- pools -----------------------------------------------------------------------------
    def _pools(self, obs: Observation, seen: set[tuple[str, str]]) -> list[IncidentEvent]:
        at = obs.at
        events: list[IncidentEvent] = []
        for p in obs.pools:
            key = self.pool_key(p.name)
            k = (POOL_EXHAUSTED, key)
            before = self._timeouts.get(key)
            self._timeouts[key] = p.timeouts_total
            grew = before is not None and p.timeouts_total > before
            active = p.waiting > 0 or grew
            o = self._open.get(k)
            if o is None:
                if not active:
                    continue
                base = before if before is not None else p.timeouts_total
                started = at - timedelta(seconds=max(0.0, p.longest_wait_s))
                peak_waiting = max(p.waiting, self._frame_waiting(p, started))
                inc = Incident(
                    local_id=next(self._ids),
                    kind=POOL_EXHAUSTED,
                    key=key,
                    started_at=started,
                    updated_at=at,
                    root=self._pool_root(obs, p),
                    peak_blast_radius=peak_waiting,
                    peak_at=at,
                    peak=self._pool_peak_json(p, base, started, None),
                    summary="",
                )
                seen.add(k)
                o = _Open(inc, at, timeouts_at_open=base, last_active=at)
                events.append(self._emit_open(o, at))
                continue
            if active:
                o.first_calm, o.last_active = None, at
            elif o.first_calm is None:
                o.first_calm = at
            if (
                not active
                and o.confirmed
                and o.first_calm is not None
                and (at - o.first_calm).total_seconds() >= self.t.pool_grace_s
            ):
                events.append(self._close(k, o.first_calm, at))
                continue
            if not active and not o.confirmed:
                continue  # adopted and calm: closed as not seen
            seen.add(k)
            inc = o.incident
            frame_w = self._frame_waiting(p, inc.started_at)
            waiting = max(p.waiting, frame_w)
            old_frame = inc.peak.get("freeze_frame") or {}
            new_frame = (
                p.frame is not None
                and self._frame_in(p.frame, inc.started_at)
                and (
                    old_frame.get("id") != p.frame.id
                    or old_frame.get("complete") != p.frame.complete
                )
            )
            timeouts = max(0, p.timeouts_total - o.timeouts_at_open)
            bigger = waiting > inc.peak_blast_radius
            changed = bigger or new_frame or timeouts != inc.peak.get("timeouts")
            peak: Mapping[str, Any] = inc.peak
            root = inc.root
            if bigger:
                peak = self._pool_peak_json(p, o.timeouts_at_open, inc.started_at, old_frame)
                root = self._pool_root(obs, p) or root
            elif changed:
                merged = dict(inc.peak)
                merged["timeouts"] = timeouts
                if new_frame and p.frame is not None:
                    merged["freeze_frame"] = p.frame.to_json()
                peak = merged
            ev = self._continue(
                k,
                at,
                changed,
                root=root,
                peak_blast_radius=max(waiting, inc.peak_blast_radius),
                peak_at=at if bigger else inc.peak_at,
                peak=peak,
            )
            if ev is not None:
                events.append(ev)
        return events

    @staticmethod
    def _frame_in(frame: FrameInfo, started: datetime) -> bool:
        """Was this freeze-frame taken during the incident (a pool timeout comes after
        the waiter's whole pool_timeout, so allow for a frame a little before `started`)?"""
        return frame.at >= started.timestamp() - 1.0

    def _frame_waiting(self, p: PoolReading, started: datetime) -> int:
        if p.frame is not None and self._frame_in(p.frame, started):
            return p.frame.waiting
        return 0

    def _pool_root(self, obs: Observation, p: PoolReading) -> IncidentRoot | None:
        holder = next(iter(p.holders), None)
        if holder is None:
            return None
        pid = holder.backend_pid
        if pid is not None and obs.snapshot is not None and pid in obs.snapshot.sessions:
            root = root_of(obs.snapshot, pid, obs.origins, pool=p.name)
        else:
            root = IncidentRoot(pid=pid, pool=p.name)
        return replace(root, origin=holder.origin or root.origin, held_for_s=holder.held_for_s)

    def _pool_peak_json(
        self,
        p: PoolReading,
        timeouts_base: int,
        started: datetime,
        old_frame: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        frame: Mapping[str, Any] | None = old_frame or None
        if p.frame is not None and self._frame_in(p.frame, started):
            frame = p.frame.to_json()
        return {
            "pool": p.name,
            "where": f"{self.service}/{self.instance}",
            "service": self.service,
            "instance": self.instance,
            "waiting": p.waiting,
            "checked_out": p.checked_out,
            "size": p.size,
            "limit": p.limit,
            "longest_wait_s": round(p.longest_wait_s, 3),
            "timeouts": max(0, p.timeouts_total - timeouts_base),
            "timeouts_total_at_open": timeouts_base,
            "holders": [h.to_json() for h in p.holders[:MAX_HOLDERS]],
            "holders_not_shown": max(0, len(p.holders) - MAX_HOLDERS),
            "freeze_frame": dict(frame) if frame else None,
        }

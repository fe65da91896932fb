"""The blocking graph: who waits on whom, roots, blast radius, and a walk for display.

Pure and iterative throughout: the input size is bounded only by max_connections, and a
pile-up is exactly when it is large, so nothing here recurses.

Edges come from `pg_blocking_pids()`, which also reports *soft* blockers (waiters queued
ahead with a conflicting mode). A queue of N waiters on one table is therefore a dense
DAG with ~N²/2 edges, and a snapshot can even catch a short-lived cycle (a deadlock the
server has not broken yet). So:

- blast radius = number of distinct transitive waiters, computed once per strongly
  connected component with integer bitsets (O(E·V/64)), not one search per node;
- the display walk shows a waiter under *every* session blocking it, but expands each
  session's own waiters only the first time it appears (later appearances are marked
  `repeat`), which keeps the output O(V+E) instead of one row per path (exponential);
- sessions on a cycle that no true root reaches get a representative root (`in_cycle`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PREPARED_XACT_PID = 0  # pg_blocking_pids() reports prepared transactions as pid 0


@dataclass(slots=True)
class BlockingGraph:
    blocked_by: dict[int, list[int]]  # waiter -> sessions blocking it (deduplicated)
    waiters: dict[int, list[int]]  # blocker -> sessions waiting directly on it
    blast_radius: dict[int, int]  # blocker -> distinct transitive waiters (only > 0)
    roots: list[int]  # block others, wait on nobody
    cycle_roots: list[int] = field(default_factory=list)  # stand-ins for rootless cycles
    in_cycle: set[int] = field(default_factory=set)

    @property
    def blocked_count(self) -> int:
        return len(self.blocked_by)


def analyze(blocked_by: Mapping[int, Iterable[int]]) -> BlockingGraph:
    """Build the graph from `pid -> blocking pids`. Empty lists are ignored."""
    clean: dict[int, list[int]] = {}
    waiters: dict[int, list[int]] = {}
    for waiter, blockers in blocked_by.items():
        seen: list[int] = []
        for b in blockers:
            if b != waiter and b not in seen:
                seen.append(b)
        if not seen:
            continue
        clean[waiter] = seen
        for b in seen:
            waiters.setdefault(b, []).append(waiter)

    blast, in_cycle = _blast_radius(waiters)
    roots = [p for p in waiters if p not in clean]
    roots.sort(key=lambda p: (-blast.get(p, 0), p))

    # Sessions with waiters that no true root reaches sit on a cycle (or behind one).
    reached = _reachable(roots, waiters)
    cycle_roots: list[int] = []
    rest = sorted((p for p in waiters if p not in reached), key=lambda p: (-blast.get(p, 0), p))
    for p in rest:
        if p in reached:
            continue
        cycle_roots.append(p)
        reached |= _reachable([p], waiters)
    return BlockingGraph(
        blocked_by=clean,
        waiters=waiters,
        blast_radius=blast,
        roots=roots,
        cycle_roots=cycle_roots,
        in_cycle=in_cycle,
    )


def _reachable(starts: Iterable[int], waiters: Mapping[int, list[int]]) -> set[int]:
    seen: set[int] = set()
    stack = list(starts)
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        stack.extend(w for w in waiters.get(p, ()) if w not in seen)
    return seen


def strongly_connected(nodes: Iterable[int], succ: Mapping[int, list[int]]) -> list[list[int]]:
    """Tarjan's algorithm, iterative. Components come out in reverse topological order:
    every component after all the components it reaches."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    out: list[list[int]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work: list[tuple[int, Any]] = [(start, iter(succ.get(start, ())))]
        while work:
            v, it = work[-1]
            descended = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(succ.get(w, ()))))
                    descended = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if descended:
                continue
            work.pop()
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
            if low[v] == index[v]:
                comp: list[int] = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
    return out


def _blast_radius(waiters: Mapping[int, list[int]]) -> tuple[dict[int, int], set[int]]:
    nodes: list[int] = list(waiters)
    for ws in waiters.values():
        nodes.extend(ws)
    nodes = list(dict.fromkeys(nodes))
    bit = {p: 1 << i for i, p in enumerate(nodes)}
    comps = strongly_connected(nodes, waiters)
    comp_of: dict[int, int] = {}
    members: list[int] = []
    for ci, comp in enumerate(comps):
        m = 0
        for p in comp:
            comp_of[p] = ci
            m |= bit[p]
        members.append(m)
    reach: list[int] = [0] * len(comps)
    in_cycle: set[int] = set()
    for ci, comp in enumerate(comps):  # sinks first: successors are already done
        mask = members[ci] if len(comp) > 1 else 0
        if len(comp) > 1:
            in_cycle.update(comp)
        for p in comp:
            for w in waiters.get(p, ()):
                cw = comp_of[w]
                if cw != ci:
                    mask |= members[cw] | reach[cw]
        reach[ci] = mask
    blast: dict[int, int] = {}
    for p in waiters:
        n = (reach[comp_of[p]] & ~bit[p]).bit_count()
        if n:
            blast[p] = n
    return blast, in_cycle


@dataclass(frozen=True, slots=True)
class TreeRow:
    pid: int
    depth: int
    parent: int | None
    root: int  # the root this row hangs under
    repeat: bool = False  # already expanded above: its waiters are not repeated here
    truncated: bool = False  # depth limit reached: its waiters are not shown
    has_waiters: bool = False


@dataclass(slots=True)
class Walk:
    rows: list[TreeRow]
    truncated: bool  # row budget exhausted


def walk(
    graph: BlockingGraph,
    key: Callable[[int], Hashable] | None = None,
    *,
    max_depth: int = 64,
    max_rows: int = 5000,
) -> Walk:
    """Pre-order rows of the blocking forest. `key` orders roots and siblings (ascending);
    by default the biggest blast radius first."""
    order: Callable[[int], Any] = key or (lambda p: (-graph.blast_radius.get(p, 0), p))
    rows: list[TreeRow] = []
    expanded: set[int] = set()
    starts = sorted(graph.roots, key=order) + list(graph.cycle_roots)
    for root in starts:
        stack: list[tuple[int, int, int | None]] = [(root, 0, None)]
        while stack:
            if len(rows) >= max_rows:
                return Walk(rows, True)
            pid, depth, parent = stack.pop()
            kids = graph.waiters.get(pid, [])
            repeat = bool(kids) and pid in expanded
            cut = bool(kids) and not repeat and depth >= max_depth
            rows.append(
                TreeRow(
                    pid=pid,
                    depth=depth,
                    parent=parent,
                    root=root,
                    repeat=repeat,
                    truncated=cut,
                    has_waiters=bool(kids),
                )
            )
            if kids and not repeat and not cut:
                expanded.add(pid)
                for k in sorted(kids, key=order, reverse=True):
                    stack.append((k, depth + 1, pid))
    return Walk(rows, False)


def nest(
    rows: Iterable[TreeRow], make: Callable[[TreeRow], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Turn pre-order rows into nested dicts, each with a `blocked` list (iteratively)."""
    out: list[dict[str, Any]] = []
    stack: list[tuple[int, dict[str, Any]]] = []
    for row in rows:
        node = make(row)
        node["blocked"] = []
        while stack and stack[-1][0] >= row.depth:
            stack.pop()
        if stack:
            stack[-1][1]["blocked"].append(node)
        else:
            out.append(node)
        stack.append((row.depth, node))
    return out

"""The blocking graph, blast radius and the display walk: pure, no database."""

from __future__ import annotations

import json
import time

from dashboard.server.tree import (
    PREPARED_XACT_PID,
    TreeRow,
    analyze,
    nest,
    strongly_connected,
    walk,
)


def shape(rows: list[TreeRow]) -> list[tuple[int, int]]:
    return [(r.depth, r.pid) for r in rows]


def test_chain() -> None:
    g = analyze({2: [1], 3: [2]})
    assert g.roots == [1]
    assert g.blast_radius == {1: 2, 2: 1}
    assert g.blocked_count == 2
    assert shape(walk(g).rows) == [(0, 1), (1, 2), (2, 3)]


def test_waiter_with_two_blockers_appears_under_both() -> None:
    g = analyze({3: [1, 2]})
    assert sorted(g.roots) == [1, 2]
    assert g.blast_radius == {1: 1, 2: 1}
    rows = walk(g).rows
    assert shape(rows) == [(0, 1), (1, 3), (0, 2), (1, 3)]
    assert not any(r.repeat for r in rows)  # a leaf is simply shown twice


def test_independent_roots_sorted_by_blast_radius() -> None:
    g = analyze({11: [10], 21: [20], 22: [20], 23: [22]})
    assert g.roots == [20, 10]
    assert g.blast_radius[20] == 3 and g.blast_radius[10] == 1
    assert [r.pid for r in walk(g).rows if r.depth == 0] == [20, 10]


def test_blast_radius_counts_distinct_transitive_waiters() -> None:
    # diamond: 1 blocks 2 and 3, both block 4: 4 counted once
    g = analyze({2: [1], 3: [1], 4: [2, 3]})
    assert g.blast_radius[1] == 3
    rows = walk(g).rows
    # 4 appears under 2 and under 3; it has no waiters so no "repeat" marking needed
    assert [r.pid for r in rows].count(4) == 2


def test_shared_subtree_is_expanded_once() -> None:
    # 5 (with waiters 6, 7) is blocked by both 1 and 2: its subtree is listed under the
    # first blocker; under the second it appears once more, marked `repeat`.
    g = analyze({5: [1, 2], 6: [5], 7: [5]})
    rows = walk(g).rows
    fives = [r for r in rows if r.pid == 5]
    assert len(fives) == 2 and [f.repeat for f in fives] == [False, True]
    assert [r.pid for r in rows].count(6) == 1
    assert g.blast_radius[1] == 3 and g.blast_radius[2] == 3


def test_dense_lock_queue_stays_linear_in_edges() -> None:
    """N waiters queued on one table: pg_blocking_pids reports every conflicting waiter
    ahead (soft blocks). Paths are exponential; rows must not be."""
    n = 300
    blocked_by = {i: [0, *range(1, i)] for i in range(1, n + 1)}
    t = time.process_time()  # CPU time: steady on a busy machine
    g = analyze(blocked_by)
    w = walk(g, max_rows=100_000)
    elapsed = time.process_time() - t
    edges = sum(len(v) for v in blocked_by.values())
    assert g.roots == [0]
    assert g.blast_radius[0] == n
    assert g.blast_radius[1] == n - 1
    assert not w.truncated
    assert len(w.rows) <= edges + 1
    assert elapsed < 2.0, elapsed


def test_deep_chain_is_iterative() -> None:
    n = 20_000  # far beyond Python's recursion limit
    g = analyze({i: [i - 1] for i in range(1, n)})
    assert g.roots == [0]
    assert g.blast_radius[0] == n - 1
    w = walk(g, max_depth=n + 1, max_rows=n + 1)
    assert len(w.rows) == n
    nested = nest(w.rows, lambda r: {"pid": r.pid})
    assert len(nested) == 1
    # JSON bodies are capped in depth by the snapshot (MAX_TREE_DEPTH); here just walk it
    node, depth = nested[0], 0
    while node["blocked"]:
        node, depth = node["blocked"][0], depth + 1
    assert depth == n - 1


def test_depth_and_row_limits() -> None:
    g = analyze({i: [i - 1] for i in range(1, 100)})
    w = walk(g, max_depth=10)
    assert w.rows[-1].depth == 10 and w.rows[-1].truncated
    w = walk(g, max_rows=5)
    assert len(w.rows) == 5 and w.truncated


def test_cycle_without_root_gets_a_representative() -> None:
    # a deadlock the server has not broken yet: 1 waits on 2, 2 waits on 1; 3 waits on 1
    g = analyze({1: [2], 2: [1], 3: [1]})
    assert g.roots == []
    assert len(g.cycle_roots) == 1
    assert g.in_cycle == {1, 2}
    # 1 has 2 and 3 behind it; 2 has 1 and (through 1) 3 behind it
    assert g.blast_radius[1] == 2 and g.blast_radius[2] == 2
    rows = walk(g).rows
    assert {r.pid for r in rows} == {1, 2, 3}
    assert len(rows) < 10  # no infinite loop


def test_prepared_transaction_and_unknown_blockers() -> None:
    g = analyze({5: [PREPARED_XACT_PID], 6: [5, 5], 7: [7]})
    assert g.roots == [PREPARED_XACT_PID]
    assert g.blocked_by[6] == [5]  # deduplicated
    assert 7 not in g.blocked_by  # a self-edge is noise
    assert g.blast_radius[PREPARED_XACT_PID] == 2


def test_nest_builds_the_recursive_json_shape() -> None:
    g = analyze({2: [1], 3: [2], 4: [1]})
    nested = nest(walk(g).rows, lambda r: {"pid": r.pid})
    assert json.loads(json.dumps(nested)) == [
        {
            "pid": 1,
            "blocked": [
                {"pid": 2, "blocked": [{"pid": 3, "blocked": []}]},
                {"pid": 4, "blocked": []},
            ],
        }
    ]


def test_strongly_connected_components_in_reverse_topological_order() -> None:
    comps = strongly_connected([1, 2, 3, 4], {1: [2], 2: [3], 3: [2, 4]})
    assert [sorted(c) for c in comps] == [[4], [2, 3], [1]]


def test_empty() -> None:
    g = analyze({})
    assert g.roots == [] and g.blast_radius == {} and walk(g).rows == []
    assert analyze({1: []}).blocked_count == 0

"""What the server is doing: pg_stat_activity + pg_locks, sampled once per process.

- queries.py   every SQL statement of this area (parameters bound, never formatted in)
- model.py     plain records: Session, LockWait, ServerSettings, Privileges
- tree.py      blocking graph, blast radius, tree walk (pure, iterative)
- activity.py  connection budget and session summaries (pure)
- snapshot.py  one sample turned into the /api/locks and /api/activity bodies (pure)
- sampler.py   the single background sampler over the diagnostics engine
- actions.py   cancel / terminate with (pid, backend_start) re-checked when signalling
"""

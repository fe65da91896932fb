"""The four-eyes approval workflow.

- `rules.py` (pure): who may approve, reject or execute a run and when; expiry; pins
  (plan SQL SHA-256, revision file SHA-256s, database heads) and how they compare.
- `service.py` (I/O): approve / reject / execute on top of the runner and the state store.
"""

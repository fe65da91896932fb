"""The audit trail: who did what, from where, when, and how it ended.

Rows live in the append-only `<schema>.audit` table (dashboard.state). This package
plugs every source into it:

- `log.py`: the one writer, `AuditLog` (`write` inside a caller's transaction, `record`
  on its own, never failing), and the `audit_marks` of the current request;
- `repo.py`: the audit SQL (the one INSERT, and reads returning frozen `AuditEntry`);
- `middleware.py`: every refused unsafe request (401/403/4xx) that nothing else recorded,
  and forged identity headers from untrusted addresses;
- `query.py` (pure): filters from query parameters, JSON and CSV shapes (CSV cells are
  defused against spreadsheet formula injection).
"""

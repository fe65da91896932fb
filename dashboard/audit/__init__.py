"""The audit trail: who did what, from where, when, and how it ended.

Rows live in the append-only `<schema>.audit` table (dashboard.state). This package
plugs every source into it:

- `record.py`: the never-failing writer, and the hooks other areas call (login and
  logout, backend cancel/terminate);
- `middleware.py`: every refused unsafe request (401/403/4xx) that nothing else recorded,
  and forged identity headers from untrusted addresses;
- `query.py` (pure): filters from query parameters, JSON and CSV shapes (CSV cells are
  defused against spreadsheet formula injection).
"""

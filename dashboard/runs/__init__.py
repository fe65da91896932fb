"""Migration runs: requests, execution on the migration worker, recovery, views."""

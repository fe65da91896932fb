"""`dashboard demo`: embedded PostgreSQL, a demo shop schema with pending work, load."""

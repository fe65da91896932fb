"""Alembic revision status (read-only), and later plan/preview and the runner."""

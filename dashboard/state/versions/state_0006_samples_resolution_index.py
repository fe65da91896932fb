"""samples: indexes for minute rows and service rows

Revision ID: state_0006
Revises: state_0005
Create Date: 2026-11-30 09:00:00

Charts over 6 h, 24 h and 7 d read the minute rows (``resolution_s = 60``) of one series,
and downsampling finds the oldest full-resolution rows (``resolution_s = 0``) of a series.
With only ``(series, at)``, a 24-hour range of minute rows scans every full-resolution row
of that day as well (30 per minute and process); `samples_series_resolution_at` reads
exactly the rows wanted. Charts of a whole service over hours and days read its service
rows (instance '', one per series, minute and service, written by the retention job):
`samples_service_rows` is a small partial index on just those, so such a chart reads a
row per minute whatever the number of instances. (dashboard/history/sample_queries.py
holds the queries.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "state_0006"
down_revision = "state_0005"
branch_labels = None
depends_on = None


def _schema() -> str:
    config = op.get_context().config
    assert config is not None
    schema: str = config.attributes["dashboard_schema"]
    return schema


def upgrade() -> None:
    schema = _schema()
    op.create_index(
        "samples_series_resolution_at", "samples", ["series", "resolution_s", "at"], schema=schema
    )
    op.create_index(
        "samples_service_rows",
        "samples",
        ["series", "service", "at"],
        schema=schema,
        postgresql_where=sa.text("instance = '' AND resolution_s = 60"),
    )


def downgrade() -> None:
    schema = _schema()
    op.drop_index("samples_service_rows", table_name="samples", schema=schema)
    op.drop_index("samples_series_resolution_at", table_name="samples", schema=schema)

"""run safety: lock attempts used and what a run left behind

Revision ID: state_0004
Revises: state_0003
Create Date: 2026-11-30 04:00:00

- ``runs.attempts``: how many lock attempts the run used (retries with backoff of a
  statement that waited for a lock); NULL for runs from before this revision.
- ``runs.warnings``: what the run left behind that needs a person, read after success
  and failure alike: ``[{"kind", "name", "message", "table", "fix"}]`` with kinds
  ``invalid_index``, ``not_valid_constraint``, ``leftover_object``
  (``dashboard.migrations.leftovers.SchemaWarning``); NULL when not read.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "state_0004"
down_revision = "state_0003"
branch_labels = None
depends_on = None


def _schema() -> str:
    config = op.get_context().config
    assert config is not None
    schema: str = config.attributes["dashboard_schema"]
    return schema


def upgrade() -> None:
    schema = _schema()
    op.add_column("runs", sa.Column("attempts", sa.Integer), schema=schema)
    op.add_column("runs", sa.Column("warnings", JSONB), schema=schema)


def downgrade() -> None:
    schema = _schema()
    op.drop_column("runs", "warnings", schema=schema)
    op.drop_column("runs", "attempts", schema=schema)

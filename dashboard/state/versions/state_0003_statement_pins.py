"""statement pins: what a run's review showed, and what an approval covers

Revision ID: state_0003
Revises: state_0002
Create Date: 2026-11-30 03:00:00

- ``runs.review``: at request time, the statements each revision of the plan sends
  (their pglast fingerprints), whether they were learned by a rehearsal (``exact``), which
  revisions are data-dependent, and what the requester acknowledged.
- ``approvals.statements``: the same pins as the approver approved them, with the
  approver's acknowledgements (data-dependent revisions, findings, each with a reason).
  The runner checks every statement against these before sending it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "state_0003"
down_revision = "state_0002"
branch_labels = None
depends_on = None


def _schema() -> str:
    config = op.get_context().config
    assert config is not None
    schema: str = config.attributes["dashboard_schema"]
    return schema


def upgrade() -> None:
    schema = _schema()
    op.add_column("runs", sa.Column("review", JSONB), schema=schema)
    op.add_column("approvals", sa.Column("statements", JSONB), schema=schema)


def downgrade() -> None:
    schema = _schema()
    op.drop_column("approvals", "statements", schema=schema)
    op.drop_column("runs", "review", schema=schema)

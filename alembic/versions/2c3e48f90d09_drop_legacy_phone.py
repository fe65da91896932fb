"""drop customers.legacy_phone (data is discarded)

Revision ID: 2c3e48f90d09
Revises: 1b2d37e8fc08
Create Date: 2026-11-02 09:00:00

"""

from alembic import op

revision = "2c3e48f90d09"
down_revision = "1b2d37e8fc08"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("customers", "legacy_phone")


def downgrade() -> None:
    raise NotImplementedError(
        "legacy_phone was dropped with its data; restore it from a backup, not a downgrade"
    )

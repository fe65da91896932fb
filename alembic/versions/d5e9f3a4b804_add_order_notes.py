"""add notes and shipping address to orders

Revision ID: d5e9f3a4b804
Revises: 8b2e4d6f1a02
Create Date: 2026-09-11 16:20:00

"""

import sqlalchemy as sa
from alembic import op

revision = "d5e9f3a4b804"
down_revision = "8b2e4d6f1a02"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("notes", sa.Text))
    op.add_column("orders", sa.Column("shipping_address", sa.Text))


def downgrade() -> None:
    op.drop_column("orders", "shipping_address")
    op.drop_column("orders", "notes")

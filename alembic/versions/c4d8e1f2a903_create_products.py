"""create products (catalog branch)

Revision ID: c4d8e1f2a903
Revises: 8b2e4d6f1a02
Create Date: 2026-09-10 10:05:00

"""

import sqlalchemy as sa
from alembic import op

revision = "c4d8e1f2a903"
down_revision = "8b2e4d6f1a02"
branch_labels = ("catalog",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("sku", sa.Text, nullable=False, unique=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("price_cents", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("products")

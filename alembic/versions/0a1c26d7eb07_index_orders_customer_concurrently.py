"""index orders by customer and date (CREATE INDEX CONCURRENTLY)

Revision ID: 0a1c26d7eb07
Revises: f70b15c6da06
Create Date: 2026-10-09 13:45:00

"""

from alembic import op

revision = "0a1c26d7eb07"
down_revision = "f70b15c6da06"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_orders_customer_created",
            "orders",
            ["customer_id", "created_at"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_orders_customer_created",
            table_name="orders",
            postgresql_concurrently=True,
            if_exists=True,
        )

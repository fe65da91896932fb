"""add 'refunded' to order_status (ALTER TYPE ... ADD VALUE, outside a transaction)

Revision ID: f70b15c6da06
Revises: e6fa04b5c905
Create Date: 2026-10-02 08:30:00

"""

from alembic import op

revision = "f70b15c6da06"
down_revision = "e6fa04b5c905"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD VALUE cannot be used in the same transaction that later uses the new value,
    # and on older servers not inside a transaction at all.
    with op.get_context().autocommit_block():
        op.execute("ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'refunded'")


def downgrade() -> None:
    # PostgreSQL cannot drop an enum value: rebuild the type without it.
    op.execute("UPDATE orders SET status = 'paid' WHERE status = 'refunded'")
    op.execute("ALTER TABLE orders ALTER COLUMN status DROP DEFAULT")
    op.execute("ALTER TYPE order_status RENAME TO order_status_old")
    op.execute("CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped')")
    op.execute(
        "ALTER TABLE orders ALTER COLUMN status TYPE order_status USING status::text::order_status"
    )
    op.execute("ALTER TABLE orders ALTER COLUMN status SET DEFAULT 'pending'")
    op.execute("DROP TYPE order_status_old")

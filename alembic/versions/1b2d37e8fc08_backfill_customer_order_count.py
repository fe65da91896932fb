"""backfill customers.order_count in batches

Revision ID: 1b2d37e8fc08
Revises: 0a1c26d7eb07
Create Date: 2026-10-20 17:10:00

"""

import sqlalchemy as sa
from alembic import op

revision = "1b2d37e8fc08"
down_revision = "0a1c26d7eb07"
branch_labels = None
depends_on = None

BATCH = 500


def upgrade() -> None:
    op.add_column("customers", sa.Column("order_count", sa.Integer))
    bind = op.get_bind()
    last_id = 0
    while True:
        # Keyset batches keep each UPDATE short, so row locks are held briefly.
        ids = [
            row[0]
            for row in bind.execute(
                sa.text("SELECT id FROM customers WHERE id > :last ORDER BY id LIMIT :batch"),
                {"last": last_id, "batch": BATCH},
            )
        ]
        if not ids:
            break
        bind.execute(
            sa.text(
                "UPDATE customers c SET order_count = "
                "(SELECT count(*) FROM orders o WHERE o.customer_id = c.id) "
                "WHERE c.id >= :lo AND c.id <= :hi"
            ),
            {"lo": ids[0], "hi": ids[-1]},
        )
        last_id = ids[-1]
    op.alter_column("customers", "order_count", server_default="0", nullable=False)


def downgrade() -> None:
    op.drop_column("customers", "order_count")

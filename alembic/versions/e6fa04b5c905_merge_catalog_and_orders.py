"""merge catalog and order-notes branches

Revision ID: e6fa04b5c905
Revises: c4d8e1f2a903, d5e9f3a4b804
Create Date: 2026-09-15 11:00:00

"""

revision = "e6fa04b5c905"
down_revision = ("c4d8e1f2a903", "d5e9f3a4b804")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """A merge point: no schema change of its own."""


def downgrade() -> None:
    """Un-merging changes nothing in the schema; it only moves the version table."""
    # Deliberately reversible: the version table is all that changes.
    return None

"""approvals (append-only, pinned to SQL, files and heads); run SQL text and expiry

Revision ID: state_0002
Revises: state_0001
Create Date: 2026-11-22 12:00:00

- ``approvals``: one decision (approve or reject) per run, by whom, from where, when, why,
  and what it was pinned to: the plan's SQL SHA-256, the SHA-256 of every revision file in
  the plan, and the database's heads at that moment. Rows are never changed: a void or
  an expiry is recorded on the run (and in the audit log), not by editing the decision.
- ``runs.sql``: the exact SQL shown when the run was requested (its SHA-256 is
  ``runs.sql_sha256``), so approvers read what they approve.
- ``runs.expires_at``: when a request waiting for approval, or an approval waiting to be
  executed, stops being valid.
- Privileges: UPDATE, DELETE and TRUNCATE on ``audit`` and ``approvals`` are revoked from
  PUBLIC and from the role running this migration (the dashboard's own role, normally);
  the append-only triggers also stop superusers and table owners.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "state_0002"
down_revision = "state_0001"
branch_labels = None
depends_on = None


def _schema() -> str:
    config = op.get_context().config
    assert config is not None
    schema: str = config.attributes["dashboard_schema"]
    return schema


def upgrade() -> None:
    schema = _schema()
    q = op.get_context().dialect.identifier_preparer.quote_schema(schema)
    op.add_column("runs", sa.Column("sql", sa.Text), schema=schema)
    op.add_column("runs", sa.Column("expires_at", sa.DateTime(timezone=True)), schema=schema)
    op.create_index(
        "runs_awaiting_expiry",
        "runs",
        ["expires_at"],
        schema=schema,
        postgresql_where=sa.text("status = 'awaiting_approval'"),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "run_id",
            sa.BigInteger,
            sa.ForeignKey(f"{schema}.runs.id"),
            nullable=False,
        ),
        sa.Column("decision", sa.Text, nullable=False),
        sa.Column("approver", sa.Text, nullable=False),
        sa.Column("approver_role", sa.Text),
        sa.Column("approver_address", sa.Text),
        sa.Column(
            "decided_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("reason", sa.Text),
        sa.Column("sql_sha256", sa.Text, nullable=False),
        sa.Column("file_sha256", JSONB, nullable=False),
        sa.Column("current_heads", JSONB, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("decision IN ('approve', 'reject')", name="approvals_decision_check"),
        sa.CheckConstraint(
            "decision <> 'reject' OR length(btrim(coalesce(reason, ''))) > 0",
            name="approvals_reject_reason_check",
        ),
        sa.CheckConstraint(
            "decision <> 'approve' OR expires_at IS NOT NULL", name="approvals_expiry_check"
        ),
        schema=schema,
    )
    # One decision per run, enforced by the database: approving twice (from two tabs or
    # two dashboard processes) cannot record two approvals.
    op.create_index("approvals_one_per_run", "approvals", ["run_id"], unique=True, schema=schema)
    op.execute(
        f"CREATE FUNCTION {q}.approvals_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'approval decisions are append-only: % is not allowed', TG_OP "
        "USING ERRCODE = 'insufficient_privilege'; END $$"
    )
    op.execute(
        f"CREATE TRIGGER approvals_no_update_delete BEFORE UPDATE OR DELETE ON {q}.approvals "
        f"FOR EACH ROW EXECUTE FUNCTION {q}.approvals_append_only()"
    )
    op.execute(
        f"CREATE TRIGGER approvals_no_truncate BEFORE TRUNCATE ON {q}.approvals "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {q}.approvals_append_only()"
    )
    for table in ("audit", "approvals"):
        op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {q}.{table} FROM PUBLIC")
        op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {q}.{table} FROM CURRENT_USER")


def downgrade() -> None:
    schema = _schema()
    q = op.get_context().dialect.identifier_preparer.quote_schema(schema)
    op.execute(f"GRANT UPDATE, DELETE, TRUNCATE ON {q}.audit TO CURRENT_USER")
    op.drop_table("approvals", schema=schema)
    op.execute(f"DROP FUNCTION IF EXISTS {q}.approvals_append_only()")
    op.drop_index("runs_awaiting_expiry", table_name="runs", schema=schema)
    op.drop_column("runs", "expires_at", schema=schema)
    op.drop_column("runs", "sql", schema=schema)

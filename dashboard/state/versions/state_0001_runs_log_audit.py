"""runs, run_log and the append-only audit table

Revision ID: state_0001
Revises:
Create Date: 2026-11-22 09:00:00

The dashboard's own schema. The schema name comes from
``op.get_context().config.attributes["dashboard_schema"]``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "state_0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = (
    "awaiting_approval",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
    "rejected",
    "expired",
)


def _schema() -> str:
    config = op.get_context().config
    assert config is not None
    schema: str = config.attributes["dashboard_schema"]
    return schema


def upgrade() -> None:
    schema = _schema()
    now = sa.text("now()")
    op.create_table(
        "runs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("direction", sa.Text, nullable=False),
        sa.Column("target_spec", sa.Text, nullable=False),
        sa.Column("to_rev", sa.Text, nullable=False),
        sa.Column("to_revs", JSONB, nullable=False),
        sa.Column("from_revs", JSONB, nullable=False),
        sa.Column("plan", JSONB, nullable=False),
        sa.Column("sql_sha256", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("requested_from", sa.Text),
        sa.Column("approved_by", sa.Text),
        sa.Column("approved_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("queued_at", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("owner", sa.Text),
        sa.Column("lock_pid", sa.Integer),
        sa.Column("lock_backend_start", sa.DateTime(timezone=True)),
        sa.Column("migrate_pid", sa.Integer),
        sa.Column("migrate_backend_start", sa.DateTime(timezone=True)),
        sa.Column("cancel_requested_by", sa.Text),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True)),
        sa.Column("progress", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("error", sa.Text),
        sa.Column("error_detail", JSONB),
        sa.Column("verified_revs", JSONB),
        sa.Column("verified_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("direction IN ('upgrade', 'downgrade')", name="runs_direction_check"),
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")",
            name="runs_status_check",
        ),
        schema=schema,
    )
    # One queued-or-running run per target, enforced by the database across processes:
    # a double-click or a second dashboard process cannot start a second run.
    op.create_index(
        "runs_one_active_per_target",
        "runs",
        ["target"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    op.create_index("runs_created_at", "runs", ["created_at"], schema=schema)
    op.create_table(
        "run_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "run_id",
            sa.BigInteger,
            sa.ForeignKey(f"{schema}.runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("revision", sa.Text),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("statement", sa.Text),
        sa.Column("duration_ms", sa.Float),
        schema=schema,
    )
    op.create_index("run_log_run_id", "run_log", ["run_id", "id"], schema=schema)
    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("address", sa.Text),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target", sa.Text),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("detail", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        schema=schema,
    )
    op.create_index("audit_at", "audit", ["at"], schema=schema)
    # Append-only, enforced by the database: UPDATE, DELETE and TRUNCATE raise.
    q = op.get_context().dialect.identifier_preparer.quote_schema(schema)
    op.execute(
        f"CREATE FUNCTION {q}.audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'the audit log is append-only: % is not allowed', TG_OP "
        "USING ERRCODE = 'insufficient_privilege'; END $$"
    )
    op.execute(
        f"CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON {q}.audit "
        f"FOR EACH ROW EXECUTE FUNCTION {q}.audit_append_only()"
    )
    op.execute(
        f"CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON {q}.audit "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {q}.audit_append_only()"
    )


def downgrade() -> None:
    schema = _schema()
    q = op.get_context().dialect.identifier_preparer.quote_schema(schema)
    op.drop_table("audit", schema=schema)
    op.execute(f"DROP FUNCTION IF EXISTS {q}.audit_append_only()")
    op.drop_table("run_log", schema=schema)
    op.drop_table("runs", schema=schema)

"""history, incidents, the fleet's pool snapshots, login sessions

Revision ID: state_0005
Revises: state_0004
Create Date: 2026-11-30 05:00:00

- ``samples``: one compact row per sampler cycle and series (``pool``, ``locks``,
  ``activity``) of each process (``service``, ``instance``); ``resolution_s`` is 0 for a
  full-resolution row and 60 for a row that stands for a minute after downsampling.
- ``incidents``: lock pile-ups, pool exhaustion, long idle-in-transaction sessions: start,
  end (NULL while open), peak, the root and what was seen at the peak.
- ``fleet_pools``: the latest pool snapshot each process publishes (one row per service
  and instance, upserted with every sample).
- ``login_sessions`` and ``login_failures``: password-mode sessions and the login rate
  limiter, so every dashboard process honours a login made on another.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "state_0005"
down_revision = "state_0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _schema() -> str:
    config = op.get_context().config
    assert config is not None
    schema: str = config.attributes["dashboard_schema"]
    return schema


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "samples",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("series", sa.Text, nullable=False),
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("instance", sa.Text, nullable=False),
        sa.Column("resolution_s", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("data", JSONB, nullable=False),
        schema=schema,
    )
    op.create_index("samples_series_at", "samples", ["series", "at"], schema=schema)
    op.create_index("samples_at", "samples", ["at"], schema=schema)
    op.create_table(
        "incidents",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("instance", sa.Text, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("root_pid", sa.Integer),
        sa.Column("root", JSONB),
        sa.Column("peak_blast_radius", sa.Integer, nullable=False, server_default="0"),
        sa.Column("peak_at", TS),
        sa.Column("peak", JSONB),
        sa.Column("summary", sa.Text, nullable=False),
        schema=schema,
    )
    op.create_index("incidents_started_at", "incidents", ["started_at"], schema=schema)
    op.create_index(
        "incidents_open_key",
        "incidents",
        ["kind", "key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_table(
        "fleet_pools",
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("instance", sa.Text, nullable=False),
        sa.Column("reported_at", TS, nullable=False),
        sa.Column("pools", JSONB, nullable=False),
        sa.PrimaryKeyConstraint("service", "instance"),
        schema=schema,
    )
    op.create_table(
        "login_sessions",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("expires_at", TS),
        schema=schema,
    )
    op.create_table(
        "login_failures",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("at", TS, nullable=False),
        schema=schema,
    )
    op.create_index("login_failures_key_at", "login_failures", ["key", "at"], schema=schema)


def downgrade() -> None:
    schema = _schema()
    for table in ("login_failures", "login_sessions", "fleet_pools", "incidents", "samples"):
        op.drop_table(table, schema=schema)

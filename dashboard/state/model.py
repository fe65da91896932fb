"""Run statuses and the tables of the dashboard schema (SQLAlchemy Core, schema-less:
the real schema name is applied with `schema_translate_map`)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

AWAITING_APPROVAL = "awaiting_approval"
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
INTERRUPTED = "interrupted"
REJECTED = "rejected"
EXPIRED = "expired"

ALL_STATUSES = (
    AWAITING_APPROVAL,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    FAILED,
    CANCELLED,
    INTERRUPTED,
    REJECTED,
    EXPIRED,
)
# At most one run per target may be in one of these (a partial unique index enforces it).
ACTIVE = (QUEUED, RUNNING)
# Not finished yet (shown as "open" in lists; polling pages keep refreshing).
OPEN = (AWAITING_APPROVAL, QUEUED, RUNNING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED, INTERRUPTED, REJECTED, EXPIRED)

APPROVE = "approve"
REJECT = "reject"
DECISIONS = (APPROVE, REJECT)

VERSION_TABLE = "dashboard_version"

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("target", Text, nullable=False),
    Column("direction", Text, nullable=False),
    Column("target_spec", Text, nullable=False),
    Column("to_rev", Text, nullable=False),
    Column("to_revs", JSONB, nullable=False),
    Column("from_revs", JSONB, nullable=False),
    Column("plan", JSONB, nullable=False),
    Column("sql_sha256", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("requested_by", Text, nullable=False),
    Column("requested_from", Text),
    Column("approved_by", Text),
    Column("approved_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("queued_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("owner", Text),
    Column("lock_pid", Integer),
    Column("lock_backend_start", DateTime(timezone=True)),
    Column("migrate_pid", Integer),
    Column("migrate_backend_start", DateTime(timezone=True)),
    Column("cancel_requested_by", Text),
    Column("cancel_requested_at", DateTime(timezone=True)),
    Column("progress", JSONB, nullable=False),
    Column("error", Text),
    Column("error_detail", JSONB),
    Column("verified_revs", JSONB),
    Column("verified_at", DateTime(timezone=True)),
    Column("sql", Text),
    Column("expires_at", DateTime(timezone=True)),
    Column("review", JSONB),
    Column("attempts", Integer),  # lock attempts used (state_0004)
    Column("warnings", JSONB),  # what the run left behind: SchemaWarning.to_json() list
)

run_log = Table(
    "run_log",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("run_id", BigInteger, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("event", Text, nullable=False),
    Column("revision", Text),
    Column("message", Text, nullable=False),
    Column("statement", Text),
    Column("duration_ms", Float),
)

audit = Table(
    "audit",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", Text, nullable=False),
    Column("address", Text),
    Column("action", Text, nullable=False),
    Column("target", Text),
    Column("outcome", Text, nullable=False),
    Column("detail", JSONB, nullable=False),
)

# One decision per run (unique index), never changed afterwards (append-only trigger).
approvals = Table(
    "approvals",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("run_id", BigInteger, ForeignKey("runs.id"), nullable=False),
    Column("decision", Text, nullable=False),
    Column("approver", Text, nullable=False),
    Column("approver_role", Text),
    Column("approver_address", Text),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("reason", Text),
    Column("sql_sha256", Text, nullable=False),
    Column("file_sha256", JSONB, nullable=False),
    Column("current_heads", JSONB, nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("statements", JSONB),
)

# -- history, incidents, fleet, login sessions (state_0005) -----------------------------
# Series of `samples`; a row's `resolution_s` is 0 (one sampler cycle) or 60 (a minute,
# after downsampling).
SERIES = ("pool", "locks", "activity")

samples = Table(
    "samples",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("series", Text, nullable=False),
    Column("service", Text, nullable=False),
    Column("instance", Text, nullable=False),
    Column("resolution_s", SmallInteger, nullable=False),
    Column("data", JSONB, nullable=False),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("kind", Text, nullable=False),  # lock_pileup, pool_exhausted, idle_in_transaction
    Column("key", Text, nullable=False),  # what makes it the same incident while open
    Column("service", Text, nullable=False),
    Column("instance", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),  # NULL while open
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("root_pid", Integer),
    Column("root", JSONB),  # pid, user, application, query, origin
    Column("peak_blast_radius", Integer, nullable=False),
    Column("peak_at", DateTime(timezone=True)),
    Column("peak", JSONB),  # the lock tree or pool freeze-frame at the peak
    Column("summary", Text, nullable=False),
)

fleet_pools = Table(
    "fleet_pools",
    metadata,
    Column("service", Text, primary_key=True),
    Column("instance", Text, primary_key=True),
    Column("reported_at", DateTime(timezone=True), nullable=False),
    Column("pools", JSONB, nullable=False),  # [same shape as /api/pool "pools"]
)

login_sessions = Table(
    "login_sessions",
    metadata,
    Column("key", Text, primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("expires_at", DateTime(timezone=True)),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("key", Text, nullable=False),  # "u:<user>" or "a:<address>"
    Column("at", DateTime(timezone=True), nullable=False),
)

"""Every query on `samples` (and the incident bands charts draw): SQL of the history area.

SQLAlchemy Core on the schema-less tables of `dashboard/state/model.py` (the state
store's engine applies the schema); every value is a bound parameter, JSON keys included.
Also no JIT: every statement here reads a bounded slice through an index, where
compiling would cost more than it saves (the reader and the retention job set
`jit = off` for their transactions: `NO_JIT`). The indexes they rely on: `samples (series, resolution_s, at)` (state_0006) for ranges
of one series at one resolution, `samples (at)` for retention, `incidents (started_at)`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Delete,
    Float,
    Insert,
    Select,
    and_,
    delete,
    exists,
    extract,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB, distinct_on
from sqlalchemy.sql.elements import ColumnElement

from dashboard.history.samples import FULL, MINUTE, WHOLE_SERVICE, SampleRow
from dashboard.history.series import Piece, SeriesSpec
from dashboard.state import model as m

s = m.samples.c
i = m.incidents.c

# Service rows are picked with constants, not parameters, so that the partial index
# `samples_service_rows` (instance = '' AND resolution_s = 60) matches generic plans too.
IS_SERVICE_ROW = and_(
    s.instance == literal_column("''"), s.resolution_s == literal_column(str(MINUTE))
)

NO_JIT = text("SET LOCAL jit = off")

# Advisory lock namespace of the retention pass (one process at a time per schema).
_RETENTION_LOCK_NS = 0x44534852  # "DSHR"


def _int4(n: int) -> int:
    return n - (1 << 32) if n >= (1 << 31) else n


def retention_lock_key(schema: str) -> tuple[int, int]:
    return _int4(_RETENTION_LOCK_NS), _int4(zlib.crc32(f"{schema}.samples".encode()))


# -- writes ----------------------------------------------------------------------------
def insert_samples(rows: Sequence[SampleRow]) -> Insert:
    """One INSERT with a VALUES list of every row (the writer's batch)."""
    return insert(m.samples).values([r.values() for r in rows])


def try_retention_lock(schema: str) -> Select[Any]:
    """True when this transaction got the retention lock (held until it ends)."""
    ns, key = retention_lock_key(schema)
    return select(func.pg_try_advisory_xact_lock(ns, key))


def delete_expired_samples(cutoff: datetime, limit: int) -> Delete:
    """At most `limit` rows older than `cutoff` (any resolution)."""
    doomed = select(s.id).where(s.at < cutoff).limit(limit).scalar_subquery()
    return delete(m.samples).where(s.id.in_(doomed))


def delete_expired_incidents(cutoff: datetime, limit: int) -> Delete:
    """At most `limit` incidents that ended before `cutoff` (open ones are kept)."""
    doomed = (
        select(i.id)
        .where(i.ended_at.is_not(None), i.ended_at < cutoff)
        .limit(limit)
        .scalar_subquery()
    )
    return delete(m.incidents).where(i.id.in_(doomed))


def oldest_full(series: str) -> Select[Any]:
    """When the oldest full-resolution row of a series was taken (NULL: none)."""
    return select(func.min(s.at)).where(s.series == series, s.resolution_s == FULL)


def _minute(at: ColumnElement[Any]) -> ColumnElement[Any]:
    # to_timestamp(floor(epoch / 60) * 60): date_bin() needs PostgreSQL 14
    return func.to_timestamp(func.floor(extract("epoch", at) / 60) * 60)


def rollup_minutes(series: str, lo: datetime, hi: datetime) -> Insert:
    """One row per minute, service and instance for the full-resolution rows of `series`
    in [lo, hi) that have no minute row yet: the minute's worst sample (highest `level`,
    the latest on a tie) with `samples`, how many rows the minute had."""
    minute = _minute(s.at).label("minute")
    full = (
        select(s.at, s.service, s.instance, s.data, minute)
        .where(s.series == series, s.resolution_s == FULL, s.at >= lo, s.at < hi)
        .subquery("f")
    )
    have = m.samples.alias("have")
    count = func.count().over(partition_by=[full.c.service, full.c.instance, full.c.minute])
    level = _num(full.c.data, "level")
    pick = (
        select(
            full.c.minute,
            literal(series).label("series"),
            full.c.service,
            full.c.instance,
            literal(MINUTE).label("resolution_s"),
            full.c.data.op("||", return_type=JSONB)(func.jsonb_build_object("samples", count)),
        )
        .where(
            ~exists().where(
                have.c.series == series,
                have.c.resolution_s == MINUTE,
                have.c.at == full.c.minute,
                have.c.service == full.c.service,
                have.c.instance == full.c.instance,
            )
        )
        .ext(distinct_on(full.c.service, full.c.instance, full.c.minute))
        .order_by(
            full.c.service,
            full.c.instance,
            full.c.minute,
            level.desc().nulls_last(),
            full.c.at.desc(),
        )
    )
    return insert(m.samples).from_select(
        ["at", "series", "service", "instance", "resolution_s", "data"], pick
    )


def delete_full(series: str, lo: datetime, hi: datetime) -> Delete:
    """The full-resolution rows of `series` in [lo, hi) (after `rollup_minutes`)."""
    return delete(m.samples).where(
        s.series == series, s.resolution_s == FULL, s.at >= lo, s.at < hi
    )


# -- service rows ----------------------------------------------------------------------
def _num(col: Any, key: str) -> ColumnElement[Any]:
    return col[key].astext.cast(Float)


def delete_service_rows(series: str, lo: datetime, hi: datetime) -> Delete:
    return delete(m.samples).where(s.series == series, IS_SERVICE_ROW, s.at >= lo, s.at < hi)


def rollup_service(spec: SeriesSpec, lo: datetime, hi: datetime) -> Insert:
    """One service row per minute in [lo, hi) and service: each measure of `spec` over the
    instances' minute rows, combined as the measure says (sum or max), plus `level` (the
    first measure) and `instances` (how many reported). Run after `delete_service_rows`
    on the same window (the job recomputes the last minutes while late rows arrive)."""
    keys = [msr.key for msr in spec.measures]
    per_instance = (
        select(
            s.at.label("minute"),
            s.service,
            s.instance,
            *[func.max(_num(s.data, k)).label(f"v{n}") for n, k in enumerate(keys)],
        )
        .where(
            s.series == spec.name,
            s.resolution_s == MINUTE,
            s.instance != WHOLE_SERVICE,
            s.at >= lo,
            s.at < hi,
        )
        .group_by(s.at, s.service, s.instance)
        .subquery("i")
    )
    combined = [
        (func.sum if msr.combine == "sum" else func.max)(per_instance.c[f"v{n}"])
        for n, msr in enumerate(spec.measures)
    ]
    pairs: list[Any] = ["level", combined[0]]
    for k, value in zip(keys, combined, strict=True):
        pairs += [k, value]
    pairs += ["instances", func.count()]
    pick = select(
        per_instance.c.minute,
        literal(spec.name).label("series"),
        per_instance.c.service,
        literal(WHOLE_SERVICE).label("instance"),
        literal(MINUTE).label("resolution_s"),
        func.jsonb_build_object(*pairs),
    ).group_by(per_instance.c.minute, per_instance.c.service)
    return insert(m.samples).from_select(
        ["at", "series", "service", "instance", "resolution_s", "data"], pick
    )


def last_service_minute(series: str, service: str, since: datetime, until: datetime) -> Select[Any]:
    """The newest service row of `series` and `service` in [since, until) (NULL: none)."""
    return select(func.max(s.at)).where(
        s.series == series, s.service == service, IS_SERVICE_ROW, s.at >= since, s.at < until
    )


# -- reads -----------------------------------------------------------------------------
def _piece(
    sel: Select[Any], series: str, p: Piece, service: str | None, instance: str | None
) -> Select[Any]:
    sel = sel.where(
        s.series == series, s.resolution_s == p.resolution_s, s.at >= p.since, s.at < p.until
    )
    if service is not None:
        sel = sel.where(s.service == service)
    if p.whole_service:
        return sel.where(IS_SERVICE_ROW)
    if instance is not None:
        return sel.where(s.instance == instance)
    if p.resolution_s != FULL:
        sel = sel.where(s.instance != WHOLE_SERVICE)
    return sel


def range_rows(
    series: str,
    pieces: Sequence[Piece],
    *,
    service: str | None = None,
    instance: str | None = None,
    limit: int,
) -> Select[Any]:
    """Each instance's rows of one series over the pieces, oldest first (at most `limit`)."""
    cols = (s.id, s.at, s.series, s.service, s.instance, s.resolution_s, s.data)
    parts = [_piece(select(*cols), series, p, service, instance) for p in pieces]
    if len(parts) == 1:
        return parts[0].order_by(s.at, s.id).limit(limit)
    u = union_all(*parts).subquery("u")
    return select(u).order_by(u.c.at, u.c.id).limit(limit)


def chart_buckets(
    spec: SeriesSpec,
    pieces: Sequence[Piece],
    *,
    step_s: int,
    service: str | None = None,
    instance: str | None = None,
) -> Select[Any]:
    """One row per bucket of `step_s` seconds: the bucket number since the epoch, then
    each measure of `spec`: its largest value per instance (a service row counts as one)
    within the bucket, combined across instances as the measure says (sum or max)."""
    keys = [msr.key for msr in spec.measures]
    cols = [s.at, s.instance, *[_num(s.data, k).label(f"v{n}") for n, k in enumerate(keys)]]
    parts = [_piece(select(*cols), spec.name, p, service, instance) for p in pieces]
    rows = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("r")
    bucket = func.floor(extract("epoch", rows.c.at) / step_s).label("b")
    per_instance = (
        select(
            bucket,
            rows.c.instance,
            *[func.max(rows.c[f"v{n}"]).label(f"v{n}") for n in range(len(keys))],
        )
        .group_by(bucket, rows.c.instance)
        .subquery("p")
    )
    combined = [
        (func.sum if msr.combine == "sum" else func.max)(per_instance.c[f"v{n}"]).label(f"v{n}")
        for n, msr in enumerate(spec.measures)
    ]
    return select(per_instance.c.b, *combined).group_by(per_instance.c.b).order_by(per_instance.c.b)


def incident_bands(
    since: datetime, until: datetime, *, service: str | None = None, limit: int = 200
) -> Select[Any]:
    """Incidents that overlap [since, until), open ones (no end) included; newest first."""
    q = (
        select(i.id, i.kind, i.service, i.instance, i.started_at, i.ended_at, i.summary)
        .where(i.started_at < until, or_(i.ended_at.is_(None), i.ended_at >= since))
        .order_by(i.started_at.desc(), i.id.desc())
        .limit(limit)
    )
    if service is not None:
        q = q.where(i.service == service)
    return q

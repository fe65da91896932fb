"""All fleet SQL, on the `fleet_pools` table of the dashboard's schema (one row per service
and instance: its latest pool snapshot).

SQLAlchemy Core on the schema-less table of dashboard/state/model.py (the state store's
engine applies the schema); every value is a bound parameter. Times come from the state
database's clock (`now()`), so processes whose clocks disagree still agree on ages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Float, Interval, bindparam, cast, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dashboard.history.fleet_view import InstanceReport, pools_from_json
from dashboard.state import model as m

# More live instances than this are not read (the row set stays bounded).
MAX_INSTANCES = 1000

t = m.fleet_pools


async def upsert(
    conn: AsyncConnection, service: str, instance: str, pools: Sequence[Mapping[str, Any]]
) -> None:
    """This process's latest pool snapshot: one row per (service, instance)."""
    stmt = insert(t).values(
        service=service, instance=instance, reported_at=func.now(), pools=list(pools)
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.service, t.c.instance],
        set_={"reported_at": stmt.excluded.reported_at, "pools": stmt.excluded.pools},
    )
    await conn.execute(stmt)


async def live(conn: AsyncConnection, window_s: float) -> list[InstanceReport]:
    """Every instance of every service that reported within the last `window_s` seconds,
    with its age by the database's clock."""
    age = cast(func.extract("epoch", func.now() - t.c.reported_at), Float).label("age_s")
    cutoff = func.now() - bindparam("window", timedelta(seconds=window_s), type_=Interval)
    stmt = (
        select(t.c.service, t.c.instance, t.c.reported_at, t.c.pools, age)
        .where(t.c.reported_at >= cutoff)
        .order_by(t.c.service, t.c.instance)
        .limit(MAX_INSTANCES)
    )
    rows = (await conn.execute(stmt)).mappings().all()
    return [
        InstanceReport(
            service=r["service"],
            instance=r["instance"],
            reported_at=r["reported_at"],
            age_s=max(0.0, float(r["age_s"] or 0.0)),
            pools=pools_from_json(r["pools"]),
        )
        for r in rows
    ]


async def prune(conn: AsyncConnection, keep_s: float) -> int:
    """Delete the rows of processes that have not reported for `keep_s` seconds."""
    cutoff = func.now() - bindparam("keep", timedelta(seconds=keep_s), type_=Interval)
    result = await conn.execute(delete(t).where(t.c.reported_at < cutoff))
    return int(result.rowcount or 0)

"""Pool-exhaustion triage: instrumented SQLAlchemy pools, the checkout ledger joined to
server backends, freeze-frames on pool timeouts, capacity checks, Prometheus metrics.

    from dashboard.pool import instrument_engine
    inst = instrument_engine(engine, "main")   # AsyncEngine or Engine; nothing else changes

(`create_app(engines={"main": engine})` does this for you.)
"""

from __future__ import annotations

from dashboard.pool.instrument import PoolInstrument, instrument_of
from dashboard.pool.instrument import instrument as instrument_engine

__all__ = ["PoolInstrument", "instrument_engine", "instrument_of"]

"""Pool-exhaustion triage: instrumented SQLAlchemy pools, the checkout ledger joined to
server backends, freeze-frames on pool timeouts, capacity checks, Prometheus metrics.

    from dashboard.pool import instrument
    inst = instrument(engine, "main")   # AsyncEngine or Engine; the host changes nothing else
"""

from __future__ import annotations

from dashboard.pool.instrument import PoolInstrument, instrument, instrument_of

__all__ = ["PoolInstrument", "instrument", "instrument_of"]

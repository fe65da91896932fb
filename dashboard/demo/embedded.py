"""The embedded PostgreSQL server (pgserver), for machines with no server at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class EmbeddedPostgres:
    """Starts pgserver's PostgreSQL in `datadir` (kept between runs) and stops it again."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        self._server: Any = None

    def start(self) -> str:
        import pgserver  # imported lazily: it ships binaries and is only needed here

        self.datadir.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.datadir, cleanup_mode="stop")
        uri: str = self._server.get_uri()
        return uri

    def uri(self, database: str) -> str:
        assert self._server is not None
        uri: str = self._server.get_uri(database)
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

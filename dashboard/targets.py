"""A target: one database plus one Alembic script folder and version table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dashboard.settings import Settings


@dataclass(frozen=True)
class Target:
    name: str
    script_location: Path
    version_table: str = "alembic_version"
    version_table_schema: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "main") -> Target:
        return cls(
            name=name,
            script_location=settings.script_location,
            version_table=settings.version_table,
            version_table_schema=settings.version_table_schema,
        )

    @property
    def qualified_version_table(self) -> str:
        if self.version_table_schema:
            return f"{self.version_table_schema}.{self.version_table}"
        return self.version_table

"""Loading an Alembic script folder without running its env.py.

A revision file that fails to import is recorded (file name and error) instead of
breaking the whole folder, so the page can name it and still show the rest.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic.script import Script, ScriptDirectory


@dataclass(frozen=True)
class ScriptError:
    file: str
    error: str


class TolerantScriptDirectory(ScriptDirectory):
    """A ScriptDirectory that skips revision files that fail to import, and remembers why."""

    def __init__(self, dir: str) -> None:  # noqa: A002 - alembic's own parameter name
        self.load_errors: list[ScriptError] = []
        super().__init__(dir)

    def _load_revisions(self) -> Iterator[Script]:
        paths = [vers for vers in self._version_locations if vers.exists()]
        seen: set[Path] = set()
        for vers in paths:
            for file_path in Script._list_py_dir(self, vers):
                real_path = Path(file_path).resolve()
                if real_path in seen:
                    continue
                seen.add(real_path)
                try:
                    script = Script._from_path(self, real_path)
                except Exception as exc:  # a broken revision file must not hide the others
                    self.load_errors.append(
                        ScriptError(file=real_path.name, error=f"{type(exc).__name__}: {exc}")
                    )
                    continue
                if script is None:
                    continue
                if not getattr(script, "revision", None):
                    continue
                yield script


def _fingerprint(location: Path) -> tuple[tuple[str, float, int], ...]:
    entries: list[tuple[str, float, int]] = []
    versions = location / "versions"
    for folder in (location, versions):
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.name.endswith(".py"):
                        st = entry.stat()
                        entries.append((entry.path, st.st_mtime, st.st_size))
        except FileNotFoundError:
            continue
    return tuple(sorted(entries))


class ScriptCache:
    """Re-load the script folder only when a file in it changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[tuple[str, float, int], ...], LoadedScripts]] = {}

    def load(self, location: Path) -> LoadedScripts:
        location = location.resolve()
        fp = _fingerprint(location)
        with self._lock:
            hit = self._cache.get(location)
            if hit is not None and hit[0] == fp:
                return hit[1]
        loaded = load_scripts(location)
        with self._lock:
            self._cache[location] = (fp, loaded)
        return loaded


@dataclass
class LoadedScripts:
    directory: TolerantScriptDirectory | None
    heads: list[str]
    errors: list[ScriptError]


def load_scripts(location: Path) -> LoadedScripts:
    if not location.is_dir():
        return LoadedScripts(None, [], [ScriptError(str(location), "script folder does not exist")])
    try:
        sd = TolerantScriptDirectory(str(location))
        heads = list(sd.get_heads())
    except Exception as exc:
        errors = list(getattr(locals().get("sd"), "load_errors", []))
        errors.append(ScriptError(file=str(location), error=f"{type(exc).__name__}: {exc}"))
        return LoadedScripts(None, [], errors)
    return LoadedScripts(sd, heads, list(sd.load_errors))

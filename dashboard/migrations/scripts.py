"""Loading an Alembic script folder without running its env.py.

A revision file that fails to import is recorded (file name and error) instead of
breaking the whole folder, so the page can name it and still show the rest.
"""

from __future__ import annotations

import os
import threading
import time
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


_Fingerprint = tuple[tuple[str, int, int, int, int], ...]
RACY_NS = 2_000_000_000  # a folder changed this recently is loaded again on the next call


def _fingerprint(location: Path) -> _Fingerprint:
    """(path, mtime, ctime, size, inode) of every .py file of the folder and versions/.

    ctime cannot be set back with `touch`, and the inode changes when an editor replaces a
    file; see `revisions.py` for the same key on single files."""
    entries: list[tuple[str, int, int, int, int]] = []
    versions = location / "versions"
    for folder in (location, versions):
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.name.endswith(".py"):
                        try:
                            st = entry.stat()
                        except FileNotFoundError:  # removed while we looked
                            continue
                        entries.append(
                            (entry.path, st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
                        )
        except (FileNotFoundError, NotADirectoryError):
            continue
    return tuple(sorted(entries))


def _settled(fp: _Fingerprint, started_ns: int) -> bool:
    """False when a file changed too close to the load for its stat() to be relied on
    (a same-size rewrite within one timestamp tick looks unchanged)."""
    newest = max((max(e[1], e[2]) for e in fp), default=0)
    return started_ns - newest > RACY_NS


class ScriptCache:
    """Re-load the script folder only when a file in it changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[_Fingerprint, LoadedScripts]] = {}

    def load(self, location: Path) -> LoadedScripts:
        location = location.resolve()
        fp = _fingerprint(location)
        with self._lock:
            hit = self._cache.get(location)
            if hit is not None and hit[0] == fp:
                return hit[1]
        started = time.time_ns()
        loaded = load_scripts(location)
        with self._lock:
            if _settled(fp, started):
                self._cache[location] = (fp, loaded)
            else:
                self._cache.pop(location, None)
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

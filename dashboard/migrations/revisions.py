"""Revision files, each read, hashed and judged once.

A revision file's record (`RevisionFile`) carries everything the read side needs from the
file's text: the SHA-256 that plans and approvals pin, the revision id it declares, and
the verdict on its `downgrade()` (see `classify.py`). The plan (`plan.py`), the status
(`status.py`) and the approval pins (`plan_file_pins`) all take it from here, so the three
can never disagree on a file.

The digest is SHA-256 of the file's UTF-8 text as Python reads it (`read_text`, universal
newlines) re-encoded as UTF-8: the digest every stored plan and approval already holds.

`RevisionFiles` caches records by path, keyed on what `stat()` says (mtime, ctime, size,
inode): an unchanged file is not read again. `ctime` cannot be set back by `touch`, and a
file changed within `RACY_NS` of being read is read again next time (as git does for its
"racily clean" index entries), because a same-size rewrite inside one timestamp tick
leaves every `stat()` field equal. The cache is thread-safe: it is used from worker
threads (`asyncio.to_thread`) and from the event loop alike.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alembic.script.revision import RevisionError
from alembic.util import CommandError

from dashboard.migrations.classify import declared_revision, downgrade_verdict_of, parse_source

if TYPE_CHECKING:  # plan.py imports this module
    from alembic.script import ScriptDirectory

    from dashboard.migrations.plan import Plan

RACY_NS = 2_000_000_000  # a file touched this recently is re-read on the next call
MAX_ENTRIES = 4096


def sha256_text(text: str) -> str:
    """SHA-256 (hex) of text encoded as UTF-8: revision files and rendered SQL alike."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RevisionFile:
    """One revision file as read from disk, hashed and judged."""

    path: str  # absolute
    file: str  # base name, as plans and pins name it
    revision: str | None  # the literal `revision = "..."` it declares, if any
    sha256: str  # "" when the file is unreadable
    downgrade_verdict: str | None  # why downgrade() cannot undo it; None: looks reversible
    error: str | None = None  # "cannot read file: ..." when the file could not be read

    @property
    def readable(self) -> bool:
        return self.error is None

    @property
    def irreversible_reason(self) -> str | None:
        """What plans and status show: an unreadable file counts as irreversible."""
        return self.error or self.downgrade_verdict

    @property
    def irreversible(self) -> bool:
        return self.irreversible_reason is not None


@dataclass(frozen=True)
class FilePin:
    """What an approval pins of one revision file of a plan (`dashboard.approvals.rules`)."""

    revision: str
    file: str
    sha256: str  # "" when the file is gone or unreadable

    def to_json(self) -> dict[str, str]:
        return {"revision": self.revision, "file": self.file, "sha256": self.sha256}


def judge_text(path: str | os.PathLike[str], text: str) -> RevisionFile:
    """Pure: the record of a revision file whose text is `text`."""
    tree, parse_error = parse_source(text)
    return RevisionFile(
        path=os.path.abspath(path),
        file=os.path.basename(path),
        revision=declared_revision(tree) if tree is not None else None,
        sha256=sha256_text(text),
        downgrade_verdict=downgrade_verdict_of(tree) if tree is not None else parse_error,
    )


def unreadable(path: str | os.PathLike[str], exc: BaseException) -> RevisionFile:
    return RevisionFile(
        path=os.path.abspath(path),
        file=os.path.basename(path),
        revision=None,
        sha256="",
        downgrade_verdict=None,
        error=f"cannot read file: {exc}",
    )


def read_revision_file(path: str | os.PathLike[str]) -> RevisionFile:
    """Read and judge one file now (no cache)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return unreadable(path, exc)
    return judge_text(path, text)


_Key = tuple[int, int, int, int, int]  # mtime_ns, ctime_ns, size, inode, device


def _key(st: os.stat_result) -> _Key:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)


@dataclass(frozen=True)
class _Entry:
    key: _Key
    record: RevisionFile
    trusted: bool  # False: changed too close to the read to rely on stat() alone


class RevisionFiles:
    """A thread-safe cache of `RevisionFile` records, by path, re-read when a file changes."""

    def __init__(
        self,
        *,
        racy_ns: int = RACY_NS,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._racy_ns = racy_ns
        self._max = max_entries
        self._clock = clock  # wall clock in ns, comparable with stat() times
        self.reads = 0  # files actually read (tests and benchmarks watch it)

    def get(self, path: str | os.PathLike[str], *, fresh: bool = False) -> RevisionFile:
        """The record of `path`; read again only when the file changed (or `fresh`)."""
        key_path = os.path.abspath(path)
        try:
            st = os.stat(key_path)
        except OSError as exc:
            with self._lock:
                self._entries.pop(key_path, None)
            return unreadable(path, exc)
        key = _key(st)
        if not fresh:
            with self._lock:
                hit = self._entries.get(key_path)
            if hit is not None and hit.trusted and hit.key == key:
                return hit.record
        # stat() before reading: if the file changes meanwhile, the stored key is the
        # older one and the next call reads again; never the reverse.
        started = self._clock()
        record = read_revision_file(key_path)
        trusted = started - max(st.st_mtime_ns, st.st_ctime_ns) > self._racy_ns
        with self._lock:
            self.reads += 1
            if record.readable:
                self._entries.pop(key_path, None)
                self._entries[key_path] = _Entry(key, record, trusted)
                while len(self._entries) > self._max:
                    del self._entries[next(iter(self._entries))]
            else:
                self._entries.pop(key_path, None)
        return record

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_SHARED = RevisionFiles()


def shared_files() -> RevisionFiles:
    """The process-wide cache that plans, status and pins share by default."""
    return _SHARED


def revision_file(path: str | os.PathLike[str], *, fresh: bool = False) -> RevisionFile:
    """The record of one revision file, from the process-wide cache."""
    return _SHARED.get(path, fresh=fresh)


def find_by_name(location: Path, name: str) -> Path | None:
    """The first file called `name` under `location` (sorted walk), or None."""
    if not name or os.sep in name or (os.altsep and os.altsep in name):
        return None
    found: list[Path] = []
    for folder, dirs, files in os.walk(location):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        if name in files:
            found.append(Path(folder) / name)
    return sorted(found)[0] if found else None


def _script_path(sd: ScriptDirectory, revision: str) -> str | None:
    try:
        script = sd.get_revision(revision)
    # unknown or ambiguous now (KeyError: a map built after a file vanished): by file name
    except (CommandError, RevisionError, KeyError):
        return None
    return script.path if script is not None and script.path else None


def plan_file_pins(
    location: Path,
    plan: Plan,
    sd: ScriptDirectory | None,
    *,
    fresh: bool = True,
    files: RevisionFiles | None = None,
) -> list[FilePin]:
    """The SHA-256 of every revision file of `plan`, as an approval pins it.

    Each file is found through the loaded scripts (`sd`, by revision) or, when they are
    not loadable or no longer know the revision, by the plan's file name under
    `location`. A file that is gone or unreadable pins "". Blocking I/O: call it through
    `asyncio.to_thread`. `fresh` (the default) reads every file again rather than
    trusting the cache, because an approval is checked against the disk itself.
    """
    cache = files if files is not None else _SHARED
    out: list[FilePin] = []
    for step in plan.steps:
        path = _script_path(sd, step.revision) if sd is not None else None
        if path is None:
            by_name = find_by_name(location, step.file)
            path = str(by_name) if by_name is not None else None
        sha = cache.get(path, fresh=fresh).sha256 if path is not None else ""
        out.append(FilePin(step.revision, step.file, sha))
    return out

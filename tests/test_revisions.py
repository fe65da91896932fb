"""Revision files read, hashed and judged once (`dashboard.migrations.revisions`): pure
logic and the file cache, no database."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from dashboard.approvals import rules
from dashboard.approvals.rules import Pins, compare_pins
from dashboard.migrations.classify import declared_revision, downgrade_verdict, parse_source
from dashboard.migrations.plan import Plan, make_plan
from dashboard.migrations.revisions import (
    FilePin,
    RevisionFile,
    RevisionFiles,
    judge_text,
    plan_file_pins,
    read_revision_file,
    revision_file,
    sha256_text,
)
from dashboard.migrations.scripts import ScriptCache, load_scripts
from dashboard.migrations.status import VersionTableRead, build_status
from dashboard.targets import Target

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "alembic"
BASE = "8b2e4d6f1a02"
NOTES = "d5e9f3a4b804"
HEAD = "2c3e48f90d09"
FAR_FUTURE_NS = 4_000_000_000 * 10**9  # a clock for which no file is "just changed"

REVISION = '''"""add things

Revision ID: abcd00000001
Revises: {down}
"""

revision = "abcd00000001"
down_revision = {down!r}


def upgrade() -> None:
    pass


def downgrade() -> None:
    {body}
'''


def source(body: str = "op.drop_table('x')", down: str | None = None) -> str:
    return REVISION.format(body=body, down=down)


def settled_cache() -> RevisionFiles:
    """A cache whose clock is far ahead: every file counts as settled (not racily clean)."""
    return RevisionFiles(clock=lambda: FAR_FUTURE_NS)


# -- pure: hashing and judging given text ----------------------------------------------------
def test_sha256_text_is_sha256_of_the_utf8_text() -> None:
    assert sha256_text("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_text("é\n") == hashlib.sha256("é\n".encode()).hexdigest()


def test_judge_text_records_revision_digest_and_verdict() -> None:
    text = source()
    rec = judge_text("/x/versions/abcd00000001_add.py", text)
    assert rec == RevisionFile(
        path=os.path.abspath("/x/versions/abcd00000001_add.py"),
        file="abcd00000001_add.py",
        revision="abcd00000001",
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        downgrade_verdict=None,
        error=None,
    )
    assert rec.readable and not rec.irreversible and rec.irreversible_reason is None


@pytest.mark.parametrize(
    ("body", "verdict"),
    [
        ("pass", "downgrade() does nothing"),
        ("raise NotImplementedError()", "downgrade() raises NotImplementedError"),
        ("op.drop_table('x')", None),
    ],
)
def test_judge_text_verdict_matches_classify(body: str, verdict: str | None) -> None:
    text = source(body)
    rec = judge_text("r.py", text)
    assert rec.downgrade_verdict == downgrade_verdict(text) == verdict
    assert rec.irreversible is (verdict is not None)
    assert rec.irreversible_reason == verdict


def test_judge_text_of_a_file_that_does_not_parse() -> None:
    rec = judge_text("broken.py", "revision = 'x'\ndef downgrade(:\n")
    assert rec.revision is None
    assert rec.sha256 == sha256_text("revision = 'x'\ndef downgrade(:\n")
    assert rec.downgrade_verdict == "file does not parse: invalid syntax (line 2)"
    assert rec.irreversible and rec.error is None


def test_parse_source_reports_null_bytes_without_raising() -> None:
    tree, error = parse_source("x = 1\0\n")
    assert tree is None and error is not None and error.startswith("file does not parse: ")
    assert "line None" not in error


@pytest.mark.parametrize(
    ("text", "revision"),
    [
        ("revision = 'abc'\n", "abc"),
        ("revision: str = 'abc'\n", "abc"),
        ("revision = 'old'\nrevision = 'new'\n", "new"),
        ("revision = make_id()\n", None),
        ("down_revision = 'abc'\n", None),
        ("def f():\n    revision = 'inner'\n", None),
    ],
)
def test_declared_revision(text: str, revision: str | None) -> None:
    tree, _ = parse_source(text)
    assert tree is not None
    assert declared_revision(tree) == revision


def test_the_last_downgrade_definition_is_judged() -> None:
    text = "def downgrade():\n    op.drop_table('x')\n\n\ndef downgrade():\n    pass\n"
    assert downgrade_verdict(text) == "downgrade() does nothing"


# -- reading files ---------------------------------------------------------------------------
def test_digest_is_of_the_text_python_reads(tmp_path: Path) -> None:
    """CRLF line ends are read as LF: the digest plans have always recorded."""
    path = tmp_path / "crlf.py"
    path.write_bytes(source().replace("\n", "\r\n").encode("utf-8"))
    rec = read_revision_file(path)
    assert rec.sha256 == sha256_text(source())
    assert rec.sha256 != hashlib.sha256(path.read_bytes()).hexdigest()


def test_unreadable_files(tmp_path: Path) -> None:
    missing = read_revision_file(tmp_path / "gone.py")
    assert missing.sha256 == "" and missing.revision is None
    assert missing.error is not None and missing.error.startswith("cannot read file: ")
    assert missing.irreversible and missing.irreversible_reason == missing.error
    latin1 = tmp_path / "latin1.py"
    latin1.write_bytes(b"# caf\xe9\nrevision = 'x'\n")
    rec = read_revision_file(latin1)
    assert rec.sha256 == "" and rec.error is not None and "utf-8" in rec.error
    cached = settled_cache()
    assert cached.get(tmp_path / "gone.py") == missing
    assert cached.reads == 0  # stat() failed: nothing read, nothing cached


def test_demo_files_hash_like_the_plan_records() -> None:
    plan = make_plan(ScriptDirectory(str(DEMO)), (), "upgrade", "heads")
    for step in plan.steps:
        path = next((DEMO / "versions").glob(f"{step.revision}_*.py"))
        expected = hashlib.sha256(path.read_text(encoding="utf-8").encode("utf-8")).hexdigest()
        rec = revision_file(path)
        assert (step.file, step.file_sha256) == (path.name, expected) == (rec.file, rec.sha256)
        assert rec.revision == step.revision
        assert (step.irreversible, step.irreversible_reason) == (
            rec.irreversible,
            rec.irreversible_reason,
        )


# -- the cache -------------------------------------------------------------------------------
def test_unchanged_files_are_not_read_again(tmp_path: Path) -> None:
    path = tmp_path / "r.py"
    path.write_text(source())
    files = settled_cache()
    first = files.get(path)
    assert files.get(path) is first and files.get(str(path)) is first
    assert files.reads == 1
    assert files.get(path, fresh=True) == first and files.reads == 2


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "r.py"
    path.write_text(source())
    files = settled_cache()
    before = files.get(path)
    path.write_text(source("pass"))
    after = files.get(path)
    assert files.reads == 2
    assert after.sha256 == sha256_text(source("pass")) != before.sha256
    assert after.downgrade_verdict == "downgrade() does nothing"


def test_a_same_size_edit_with_mtime_set_back_is_seen(tmp_path: Path) -> None:
    """`touch -r` restores mtime, not ctime (and an editor's replace changes the inode)."""
    path = tmp_path / "r.py"
    path.write_text(source("op.drop_table('a')"))
    st = os.stat(path)
    files = settled_cache()
    files.get(path)
    time.sleep(0.05)  # past the file system's timestamp tick
    path.write_text(source("op.drop_table('b')"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size
    assert files.get(path).sha256 == sha256_text(source("op.drop_table('b')"))


def test_a_file_changed_just_now_is_not_trusted_from_the_cache(tmp_path: Path) -> None:
    """Within one timestamp tick a same-size rewrite leaves stat() unchanged: a file
    that changed right before it was read is read again next time."""
    path = tmp_path / "r.py"
    path.write_text(source())
    files = RevisionFiles()  # the real clock: the file changed just now
    files.get(path)
    files.get(path)
    assert files.reads == 2
    later = RevisionFiles(clock=lambda: time.time_ns() + 10**10)
    later.get(path)
    later.get(path)
    assert later.reads == 1


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    files = RevisionFiles(clock=lambda: FAR_FUTURE_NS, max_entries=2)
    paths = [tmp_path / f"r{i}.py" for i in range(3)]
    for p in paths:
        p.write_text(source())
        files.get(p)
    files.get(paths[0])  # evicted first: read again
    assert files.reads == 4
    files.get(paths[2])
    assert files.reads == 4


def test_the_cache_is_thread_safe(tmp_path: Path) -> None:
    paths = []
    for i in range(8):
        p = tmp_path / f"r{i}.py"
        p.write_text(source(f"op.drop_table('t{i}')"))
        paths.append(p)
    files = settled_cache()
    start = threading.Barrier(16)

    def work(n: int) -> list[str]:
        start.wait()
        return [files.get(paths[(n + k) % len(paths)]).sha256 for k in range(200)]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(work, range(16)))
    for n, shas in enumerate(results):
        for k, sha in enumerate(shas):
            assert sha == sha256_text(source(f"op.drop_table('t{(n + k) % len(paths)}')"))
    warmed = files.reads
    assert len(paths) <= warmed <= 16 * len(paths)
    for p in paths:
        files.get(p)
    assert files.reads == warmed


# -- plans and status take their verdicts from the same record -------------------------------
def test_plan_uses_the_given_cache(demo_scripts: Path) -> None:
    sd = ScriptDirectory(str(demo_scripts))
    files = settled_cache()
    first = make_plan(sd, (), "upgrade", "heads", files=files)
    assert files.reads == len(first.steps) == 8
    again = make_plan(sd, (), "upgrade", "heads", files=files)
    assert files.reads == 8 and again == first
    make_plan(sd, (), "upgrade", "heads", files=files, fresh_files=True)
    assert files.reads == 16


def test_plan_of_an_unreadable_file_is_irreversible(demo_scripts: Path) -> None:
    sd = ScriptDirectory(str(demo_scripts))
    assert sd.get_heads() == [HEAD]  # loads the revision map now
    path = next((demo_scripts / "versions").glob(f"{NOTES}_*.py"))
    path.unlink()  # the loaded scripts still know it; the file is gone
    plan = make_plan(sd, (BASE,), "upgrade", NOTES, files=settled_cache())
    (step,) = plan.steps
    assert step.file == path.name and step.file_sha256 == ""
    assert step.irreversible and str(step.irreversible_reason).startswith("cannot read file: ")


def test_status_shows_the_same_verdicts_and_digests_as_the_plan() -> None:
    loaded = load_scripts(DEMO)
    status = build_status(loaded, VersionTableRead(True, [BASE]), Target("main", DEMO))
    assert loaded.directory is not None
    plan = make_plan(loaded.directory, (BASE,), "upgrade", "heads")
    by_rev = {p.revision: p for p in status.pending}
    assert sorted(by_rev) == sorted(plan.revisions)
    for step in plan.steps:
        info = by_rev[step.revision]
        assert (info.file, info.file_sha256, info.irreversible, info.irreversible_reason) == (
            step.file,
            step.file_sha256,
            step.irreversible,
            step.irreversible_reason,
        )
    assert by_rev[HEAD].irreversible_reason == "downgrade() raises NotImplementedError"
    base_file = next((DEMO / "versions").glob(f"{BASE}_*.py"))
    assert [(a.revision, a.file) for a in status.applied] == [(BASE, base_file.name)]
    assert status.applied[0].file_sha256 == revision_file(base_file).sha256


# -- approval pins ---------------------------------------------------------------------------
def pins_of(plan: Plan) -> list[tuple[str, str, str]]:
    return [(s.revision, s.file, s.file_sha256) for s in plan.steps]


def requested(plan: Plan) -> Pins:
    """The file pins a request records: the plan's own digests."""
    return Pins.make("s", (FilePin(s.revision, s.file, s.file_sha256) for s in plan.steps), [BASE])


def as_tuples(pins: list[FilePin]) -> list[tuple[str, str, str]]:
    return [(p.revision, p.file, p.sha256) for p in pins]


def test_file_pins_equal_what_the_plan_recorded(demo_scripts: Path) -> None:
    sd = ScriptDirectory(str(demo_scripts))
    plan = make_plan(sd, (BASE,), "upgrade", "heads")
    pins = plan_file_pins(demo_scripts, plan, sd)
    assert as_tuples(pins) == pins_of(plan)
    assert all(len(p.sha256) == 64 for p in pins)
    # without loadable scripts the files are found by name, with the same digests
    assert as_tuples(plan_file_pins(demo_scripts, plan, None)) == pins_of(plan)
    # and the rules see no change against what the plan recorded
    assert compare_pins(requested(plan), Pins.make("s", pins, [BASE]), when="requested") == []


def test_file_pins_see_changed_and_removed_files(demo_scripts: Path) -> None:
    sd = ScriptDirectory(str(demo_scripts))
    plan = make_plan(sd, (BASE,), "upgrade", "heads")
    versions = demo_scripts / "versions"
    edited = next(versions.glob(f"{NOTES}_*.py"))
    edited.write_text(edited.read_text() + "\n# edited\n")
    assert sd.get_heads() == [HEAD]  # loaded before the files change
    removed = next(versions.glob(f"{HEAD}_*.py"))
    removed.unlink()
    reloaded = ScriptDirectory(str(demo_scripts))  # no longer knows HEAD
    for scripts in (sd, reloaded, None):
        pins = {p.revision: p.sha256 for p in plan_file_pins(demo_scripts, plan, scripts)}
        assert pins[NOTES] == sha256_text(edited.read_text())
        assert pins[HEAD] == ""
        unchanged = [s for s in plan.steps if s.revision not in (NOTES, HEAD)]
        assert all(pins[s.revision] == s.file_sha256 for s in unchanged)
    changes = compare_pins(
        requested(plan), Pins.make("s", plan_file_pins(demo_scripts, plan, None), [BASE])
    )
    assert [(c.what, c.revision) for c in changes] == [("file", NOTES), ("file", HEAD)]


def test_file_pins_read_fresh_by_default(tmp_path: Path, demo_scripts: Path) -> None:
    sd = ScriptDirectory(str(demo_scripts))
    files = settled_cache()
    plan = make_plan(sd, (BASE,), "upgrade", "+1", files=files)
    assert files.reads == 1
    plan_file_pins(demo_scripts, plan, sd, files=files)
    assert files.reads == 2
    plan_file_pins(demo_scripts, plan, sd, files=files, fresh=False)
    assert files.reads == 2


def test_file_pin_is_one_type_for_rules_and_revisions() -> None:
    assert rules.FilePin is FilePin
    assert FilePin("r", "r_x.py", "ab").to_json() == {
        "revision": "r",
        "file": "r_x.py",
        "sha256": "ab",
    }


def test_script_cache_reloads_a_folder_changed_just_now(demo_scripts: Path) -> None:
    cache = ScriptCache()
    first = cache.load(demo_scripts)
    # copied a moment ago: not trusted yet, so a second load is a fresh one
    assert cache.load(demo_scripts) is not first
    assert first.heads == [HEAD]

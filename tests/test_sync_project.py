"""Another project's migration folder, written for a sync engine (the default Alembic
template) and migrated by plain `alembic upgrade`: `dashboard status` must report exactly
what `alembic current` and `alembic heads` report, without running that env.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def alembic(proj: Path, *args: str) -> str:
    proc = subprocess.run(
        [str(BIN / "alembic"), *args],
        cwd=proj,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def revs(output: str) -> list[str]:
    return sorted(set(re.findall(r"^([0-9a-f]{12})\b", output, flags=re.M)))


def status(proj: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    env["DASHBOARD_DATABASE_URL"] = url
    env["DASHBOARD_SCRIPT_LOCATION"] = str(proj / "migrations")
    return subprocess.run(
        [str(BIN / "dashboard"), "status", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def make_project(tmp_path: Path, plain_db_url: str) -> tuple[Path, list[str]]:
    proj = tmp_path / "otherproj"
    proj.mkdir()
    alembic(proj, "init", "migrations")  # the default (sync) template
    ini = proj / "alembic.ini"
    sync_url = make_url(plain_db_url).set(drivername="postgresql+psycopg")
    text = ini.read_text().replace(
        "sqlalchemy.url = driver://user:pass@localhost/dbname",
        "sqlalchemy.url = " + sync_url.render_as_string(hide_password=False).replace("%", "%%"),
    )
    ini.write_text(text)
    ids = []
    for msg in ("create widgets", "add widget color", "index widgets"):
        out = alembic(proj, "revision", "-m", msg)
        ids.append(re.findall(r"([0-9a-f]{12})_", out)[0])
    # give the revisions real bodies
    for path in (proj / "migrations" / "versions").glob("*.py"):
        src = path.read_text()
        if "create widgets" in src:
            assert '"""Upgrade schema."""' in src, src
            src = src.replace(
                'def upgrade() -> None:\n    """Upgrade schema."""\n    pass',
                "def upgrade() -> None:\n    op.execute('CREATE TABLE widgets (id int primary key)')",
            )
        path.write_text(src)
    return proj, ids


def test_sync_template_project_matches_alembic_cli(
    tmp_path: Path, plain_db_url: str, db_url: str
) -> None:
    proj, ids = make_project(tmp_path, plain_db_url)
    alembic(proj, "upgrade", ids[0])

    current = revs(alembic(proj, "current"))
    heads = revs(alembic(proj, "heads"))
    proc = status(proj, db_url, "--json")
    assert proc.returncode == 3, proc.stderr  # pending
    body = json.loads(proc.stdout)
    assert body["current"] == current == [ids[0]]
    assert body["heads"] == heads == [ids[2]]
    assert [p["revision"] for p in body["pending"]] == ids[1:]
    # a plain URL (postgresql://) is accepted too, and the text output says the same
    proc = status(proj, plain_db_url)
    assert proc.returncode == 3
    assert "pending:  2" in proc.stdout

    alembic(proj, "upgrade", "head")
    proc = status(proj, db_url, "--json")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert body["state"] == "up_to_date"
    assert body["current"] == revs(alembic(proj, "current")) == [ids[2]]


async def test_status_exit_codes_for_ahead_and_unreachable(
    tmp_path: Path, plain_db_url: str, db_url: str
) -> None:
    conn = await asyncpg.connect(plain_db_url)
    await conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    await conn.execute("INSERT INTO alembic_version VALUES ('0123456789ab')")
    await conn.close()
    proj = ROOT  # the demo scripts
    env_url = db_url
    proc = subprocess.run(
        [str(BIN / "dashboard"), "status"],
        cwd=proj,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")},
            "DASHBOARD_DATABASE_URL": env_url,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 4
    assert "ahead" in proc.stdout
    proc = subprocess.run(
        [str(BIN / "dashboard"), "status"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")},
            "DASHBOARD_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "database unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr

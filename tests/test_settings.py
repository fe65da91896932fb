"""Settings validation: one clear line naming the variable; the CLI exits non-zero
without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent


def env(**kw: str) -> dict[str, str]:
    base = {"DASHBOARD_DATABASE_URL": "postgresql://u@localhost/db"}
    base.update(kw)
    return base


def test_defaults_and_url_conversion() -> None:
    s = Settings.from_env(env())
    assert s.database_url == "postgresql+asyncpg://u@localhost/db"
    assert s.auth_mode == "proxy"
    assert s.roles == {"*": "viewer"}
    assert s.require_approval is True
    assert s.lock_timeout_ms == 3000
    assert s.statement_timeout_ms == 0
    assert (s.lock_retries, s.pileup_max_waiters, s.pileup_max_wait_ms) == (5, 5, 1000)
    assert s.secret_key_generated


def test_roles_parse() -> None:
    s = Settings.from_env(
        env(DASHBOARD_ROLES="alice=admin, bob=approver,group:ops=operator,*=viewer")
    )
    assert s.roles == {"alice": "admin", "bob": "approver", "group:ops": "operator", "*": "viewer"}


@pytest.mark.parametrize(
    ("overrides", "variable", "fragment"),
    [
        ({"DASHBOARD_DATABASE_URL": "not a url"}, "DASHBOARD_DATABASE_URL", "not a database URL"),
        ({"DASHBOARD_DATABASE_URL": "mysql://u@h/db"}, "DASHBOARD_DATABASE_URL", "PostgreSQL"),
        (
            {"DASHBOARD_DATABASE_URL": "postgresql+psycopg2://u@h/db"},
            "DASHBOARD_DATABASE_URL",
            "psycopg2",
        ),
        ({"DASHBOARD_DATABASE_URL": "postgresql://u@h"}, "DASHBOARD_DATABASE_URL", "no database"),
        (
            {"DASHBOARD_SCRIPT_LOCATION": "/no/such/folder"},
            "DASHBOARD_SCRIPT_LOCATION",
            "does not exist",
        ),
        ({"DASHBOARD_ROLES": "alice"}, "DASHBOARD_ROLES", "user=role"),
        ({"DASHBOARD_ROLES": "alice=boss"}, "DASHBOARD_ROLES", "'boss'"),
        ({"DASHBOARD_AUTH_MODE": "ldap"}, "DASHBOARD_AUTH_MODE", "not one of"),
        ({"DASHBOARD_TRUSTED_PROXIES": "10.0.0.0/8,nope"}, "DASHBOARD_TRUSTED_PROXIES", "'nope'"),
        ({"DASHBOARD_REQUIRE_APPROVAL": "maybe"}, "DASHBOARD_REQUIRE_APPROVAL", "boolean"),
        ({"DASHBOARD_LOCK_TIMEOUT_MS": "3s"}, "DASHBOARD_LOCK_TIMEOUT_MS", "whole number"),
        ({"DASHBOARD_LOCK_TIMEOUT_MS": "-1"}, "DASHBOARD_LOCK_TIMEOUT_MS", "minimum"),
        ({"DASHBOARD_LOCK_RETRIES": "0"}, "DASHBOARD_LOCK_RETRIES", "minimum of 1"),
        ({"DASHBOARD_LOCK_RETRIES": "many"}, "DASHBOARD_LOCK_RETRIES", "whole number"),
        ({"DASHBOARD_PILEUP_MAX_WAITERS": "0"}, "DASHBOARD_PILEUP_MAX_WAITERS", "minimum of 1"),
        ({"DASHBOARD_PILEUP_MAX_WAIT_MS": "10"}, "DASHBOARD_PILEUP_MAX_WAIT_MS", "minimum of 50"),
        ({"DASHBOARD_PILEUP_MAX_WAIT_MS": "1s"}, "DASHBOARD_PILEUP_MAX_WAIT_MS", "whole number"),
        ({"DASHBOARD_VERSION_TABLE": "x; drop"}, "DASHBOARD_VERSION_TABLE", "identifier"),
        ({"DASHBOARD_SECRET_KEY": "short"}, "DASHBOARD_SECRET_KEY", "16"),
    ],
)
def test_bad_values_name_the_variable(
    overrides: dict[str, str], variable: str, fragment: str
) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env(**overrides))
    assert err.value.variable == variable
    assert fragment in str(err.value)


def test_auth_none_refused_off_loopback() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env(DASHBOARD_AUTH_MODE="none"), host="0.0.0.0")
    assert err.value.variable == "DASHBOARD_AUTH_MODE"
    assert Settings.from_env(env(DASHBOARD_AUTH_MODE="none"), host="127.0.0.1").auth_mode == "none"


def test_serve_requires_database_url() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({}, require_database=True)
    assert err.value.variable == "DASHBOARD_DATABASE_URL"


def run_cli(*args: str, **envvars: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    e.update(envvars)
    return subprocess.run(
        [sys.executable, "-m", "dashboard.cli", *args],
        cwd=ROOT,
        env=e,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("envvars", "variable"),
    [
        ({"DASHBOARD_DATABASE_URL": "mysql://x@y/z"}, "DASHBOARD_DATABASE_URL"),
        (
            {"DASHBOARD_DATABASE_URL": "postgresql://x@y/z", "DASHBOARD_ROLES": "bob"},
            "DASHBOARD_ROLES",
        ),
        (
            {"DASHBOARD_DATABASE_URL": "postgresql://x@y/z", "DASHBOARD_SCRIPT_LOCATION": "nope"},
            "DASHBOARD_SCRIPT_LOCATION",
        ),
        ({}, "DASHBOARD_DATABASE_URL"),
    ],
)
def test_cli_reports_one_line_and_exits_2(envvars: dict[str, str], variable: str) -> None:
    proc = run_cli("status", **envvars)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert variable in lines[0]
    assert "Traceback" not in proc.stderr


def test_demo_refuses_non_loopback() -> None:
    proc = run_cli("demo", "--host", "0.0.0.0")
    assert proc.returncode == 2
    assert "loopback" in proc.stderr
    assert "Traceback" not in proc.stderr

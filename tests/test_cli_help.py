"""`dashboard --help` and each command's help list the environment variables it reads and
its exit codes, generated from one table (dashboard/settings.py `ENVIRONMENT`) that cannot
drift: it names exactly the variables `Settings.from_env` reads, each literal default is the
real default, and README.md's configuration table lists the same variables. Only the
last test (serve on a taken port) needs a database.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard import cli, cli_help
from dashboard.review import command as review_command
from dashboard.settings import ENVIRONMENT, Settings
from dashboard.state import admin as state_admin
from tests.test_docs import variables_documented, variables_read

ROOT = Path(__file__).resolve().parent.parent
NAMES = [v.name for v in ENVIRONMENT]
COMMANDS = ("serve", "demo", "status", "review", "user", "state")


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def section(text: str, title: str) -> str:
    """The lines of one section of the help's tail, up to the next blank line."""
    found = re.search(rf"^{re.escape(title)}\n(.*?)(?:\n\n|\Z)", text, re.M | re.S)
    assert found, f"no {title!r} section in:\n{text}"
    return found.group(1)


def listed_variables(text: str) -> list[str]:
    return re.findall(r"^  ([A-Z][A-Z0-9_]+)\b", section(text, "environment variables:"), re.M)


def listed_codes(text: str) -> list[int]:
    return [int(c) for c in re.findall(r"^  (\d+) ", section(text, "exit codes:"), re.M)]


def test_the_table_names_exactly_what_settings_reads() -> None:
    assert len(NAMES) == len(set(NAMES)), "a variable is in the table twice"
    assert set(NAMES) == set(variables_read()), (
        f"missing {sorted(variables_read() - set(NAMES))}, "
        f"not read {sorted(set(NAMES) - variables_read())}"
    )
    assert set(NAMES) == set(variables_documented()), "README.md's table and ENVIRONMENT differ"
    assert all(v.meaning and v.default_text for v in ENVIRONMENT)


def test_each_literal_default_is_the_real_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # DASHBOARD_SCRIPT_LOCATION's default is relative
    base = {"DASHBOARD_SECRET_KEY": "k" * 32}
    unset = Settings.from_env(base)
    literal = [v for v in ENVIRONMENT if v.default]
    assert len(literal) >= 25, "most settings have a literal default"
    for var in literal:
        assert Settings.from_env(base | {var.name: var.default}) == unset, (
            f"{var.name}={var.default} is not what from_env uses when it is unset"
        )


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_lists_its_variables_and_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_of(capsys, command)
    spec = cli_help.COMMANDS[command]
    expected = NAMES if spec.variables is None else list(spec.variables)
    assert listed_variables(text) == expected + [n for n, _ in spec.other_variables]
    assert listed_codes(text) == [c for c, _ in spec.exit_codes]
    assert 0 in listed_codes(text) and 2 in listed_codes(text)
    for line in text.splitlines():
        assert len(line) <= 80, f"help line wider than a terminal: {line!r}"


def test_the_codes_listed_are_the_codes_the_commands_return() -> None:
    def codes(command: str) -> set[int]:
        return {c for c, _ in cli_help.COMMANDS[command].exit_codes}

    assert {
        cli.EXIT_OK,
        cli.EXIT_ERROR,
        cli.EXIT_CONFIG,
        cli.EXIT_PENDING,
        cli.EXIT_INCONSISTENT,
        cli.EXIT_INTERRUPTED,
    } == codes("status")
    assert {
        review_command.EXIT_OK,
        review_command.EXIT_ERROR,
        review_command.EXIT_CONFIG,
        review_command.EXIT_FINDINGS,
        cli.EXIT_INTERRUPTED,
    } == codes("review")
    assert {
        state_admin.EXIT_OK,
        state_admin.EXIT_ERROR,
        state_admin.EXIT_CONFIG,
        cli.EXIT_INTERRUPTED,
    } == codes("state")
    assert {cli.EXIT_OK, cli.EXIT_CONFIG, cli.EXIT_INTERRUPTED} == codes("user")
    assert {cli.EXIT_OK, cli.EXIT_ERROR, cli.EXIT_CONFIG, cli.EXIT_INTERRUPTED} == codes("serve")


def test_review_help_names_fail_on_and_exit_5(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys, "review")
    assert re.search(r"^  5 +the plan's risk is at or above --fail-on$", text, re.M), text
    assert "DASHBOARD_REHEARSAL_SERVER_URL" in section(text, "environment variables:")


def test_demo_help_shows_the_demo_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from dashboard.demo.run import demo_environment

    text = help_of(capsys, "demo")
    flat = " ".join(section(text, "environment variables:").split())
    overrides = demo_environment({}, "-", "-")
    for name, value in overrides.items():
        if value != "-":
            assert re.search(rf"{name} [^[]*\[default: {re.escape(value)}\]", flat), (name, value)
    assert "[default: an embedded PostgreSQL in .demo/pgdata]" in flat


def test_subcommands_carry_their_command_s_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, command in ((("user", "add"), "user"), (("state", "upgrade"), "state")):
        text = help_of(capsys, *argv)
        assert listed_codes(text) == [c for c, _ in cli_help.COMMANDS[command].exit_codes]
        assert listed_variables(text)[0] == cli_help.COMMANDS[command].variables[0]  # type: ignore[index]


def test_dashboard_help_lists_every_variable_and_every_command_s_codes() -> None:
    """The real entry point, as a person types it."""
    done = subprocess.run(
        [sys.executable, "-m", "dashboard.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert listed_variables(text) == NAMES
    codes = section(text, "exit codes (see `dashboard COMMAND --help`):")
    for command in COMMANDS:
        assert re.search(rf"^  {command}: 0 ", codes, re.M), (command, codes)
    assert "review: 0 no finding reaches --fail-on;" in codes
    assert "5 the plan's risk is at or above --fail-on" in " ".join(codes.split())


def test_serve_exits_1_when_it_cannot_start(db_url: str) -> None:
    """What `dashboard serve --help` says: 1 when the address is taken (uvicorn's own code
    would be 3, which is `status`'s "pending")."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(os.environ) | {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_SECRET_KEY": "k" * 32,
        }
        done = subprocess.run(
            [sys.executable, "-m", "dashboard.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert "address already in use" in done.stderr
    assert "dashboard.cli the server could not start" in done.stderr

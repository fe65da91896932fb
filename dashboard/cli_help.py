"""The tail of each command's --help: the environment variables it reads and its exit codes.

Generated from `dashboard.settings.ENVIRONMENT` (one table: name, meaning, default), so a
new setting shows up in `dashboard --help` and `dashboard serve --help` without anyone
editing this file; the other commands list the settings they act on by name (checked
against the table by tests/test_cli_help.py). Pure: no I/O.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dashboard.settings import ENVIRONMENT, EnvVar

WIDTH = 79
# two spaces, the longest name, two spaces
NAME_COL = 2 + max(len(v.name) for v in ENVIRONMENT) + 2

# Exit codes shared by every command.
OK = (0, "done")
CONFIG = (2, "bad configuration or usage (one line names the variable or option)")
INTERRUPTED = (130, "interrupted (Ctrl-C)")


@dataclass(frozen=True)
class CommandHelp:
    """What `dashboard COMMAND --help` says after the options."""

    variables: tuple[str, ...] | None  # None: every variable of the table
    exit_codes: tuple[tuple[int, str], ...]
    # variables that are not the dashboard's own settings (name, meaning)
    other_variables: tuple[tuple[str, str], ...] = ()
    # defaults that differ for this command (name -> default)
    defaults: Mapping[str, str] | None = None
    note: str = ""


CHECKED = (
    "Every DASHBOARD_ variable is checked at start: a bad value of any of them exits 2 "
    "(`dashboard serve --help` lists them all)."
)

COMMANDS: dict[str, CommandHelp] = {
    "serve": CommandHelp(
        variables=None,
        exit_codes=(
            (0, "stopped cleanly"),
            (1, "the server could not start (address in use, start-up failed)"),
            CONFIG,
            INTERRUPTED,
        ),
        note="The dashboard starts even while the database is unreachable, and says so on "
        "every page.",
    ),
    "demo": CommandHelp(
        variables=None,
        exit_codes=(
            (0, "stopped (Ctrl-C stops the demo and its embedded PostgreSQL)"),
            (1, "the demo could not start (embedded PostgreSQL, address in use)"),
            (2, "bad configuration, or --host is not a loopback address"),
        ),
        note="Without DASHBOARD_DATABASE_URL the demo starts an embedded PostgreSQL under "
        ".demo/; it never binds beyond loopback.",
    ),
    "status": CommandHelp(
        variables=(
            "DASHBOARD_DATABASE_URL",
            "DASHBOARD_SCRIPT_LOCATION",
            "DASHBOARD_VERSION_TABLE",
            "DASHBOARD_VERSION_TABLE_SCHEMA",
            "DASHBOARD_SCHEMA",
            "DASHBOARD_STATE_DATABASE_URL",
        ),
        exit_codes=(
            (0, "up to date"),
            (1, "database unreachable"),
            CONFIG,
            (3, "migrations pending, or never migrated"),
            (4, "database ahead of the scripts, or version table inconsistent"),
            INTERRUPTED,
        ),
        note=CHECKED,
    ),
    "review": CommandHelp(
        variables=(
            "DASHBOARD_DATABASE_URL",
            "DASHBOARD_SCRIPT_LOCATION",
            "DASHBOARD_VERSION_TABLE",
            "DASHBOARD_VERSION_TABLE_SCHEMA",
            "DASHBOARD_REHEARSAL_SERVER_URL",
            "DASHBOARD_REHEARSAL_TIMEOUT_S",
            "DASHBOARD_RUN_ENV_PY",
        ),
        exit_codes=(
            (0, "no finding reaches --fail-on"),
            (1, "database unreachable (or an unexpected error, with its traceback)"),
            (2, "bad configuration, or a target that cannot be planned"),
            (5, "the plan's risk is at or above --fail-on"),
            INTERRUPTED,
        ),
        note=CHECKED,
    ),
    "user": CommandHelp(
        variables=("DASHBOARD_USERS_FILE",),
        other_variables=(
            ("XDG_CONFIG_HOME", "where the users file lives when DASHBOARD_USERS_FILE is unset"),
            ("HOME", "... else ~/.config/pg-ops-dashboard/users.txt"),
        ),
        exit_codes=(
            OK,
            (2, "the users file or the input is unusable (bad name, no terminal, mismatch)"),
            INTERRUPTED,
        ),
    ),
    "state": CommandHelp(
        variables=(
            "DASHBOARD_STATE_OWNER_URL",
            "DASHBOARD_STATE_DATABASE_URL",
            "DASHBOARD_DATABASE_URL",
            "DASHBOARD_SCHEMA",
        ),
        exit_codes=(
            (0, "the schema is up to date"),
            (1, "the upgrade failed (database unreachable, missing privileges)"),
            CONFIG,
            INTERRUPTED,
        ),
        note=CHECKED,
    ),
}


def table_entries(names: Sequence[str] | None) -> list[EnvVar]:
    by_name = {v.name: v for v in ENVIRONMENT}
    if names is None:
        return list(ENVIRONMENT)
    return [by_name[n] for n in names]


def _row(name: str, text: str, column: int = NAME_COL) -> list[str]:
    """`  NAME      text` with the text wrapped under its own column."""
    indent = " " * column
    first = f"  {name}  ".ljust(column)
    if len(first) > column:  # a long name: the text starts on the next line
        wrapped = textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent)
        return [first.rstrip(), *wrapped]
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=indent)


def variables_section(help_: CommandHelp) -> list[str]:
    overrides = help_.defaults or {}
    lines = ["environment variables:"]
    for var in table_entries(help_.variables):
        default = overrides.get(var.name, var.default_text)
        lines += _row(var.name, f"{var.meaning} [default: {default}]")
    for name, meaning in help_.other_variables:
        lines += _row(name, meaning)
    return lines


def exit_section(codes: Sequence[tuple[int, str]]) -> list[str]:
    lines = ["exit codes:"]
    for code, meaning in codes:
        lines += _row(str(code), meaning, column=8)
    return lines


def epilog(command: str, defaults: Mapping[str, str] | None = None) -> str:
    """The help tail of one command; `defaults` replaces table defaults (the demo's)."""
    help_ = COMMANDS[command]
    if defaults:
        help_ = CommandHelp(
            help_.variables, help_.exit_codes, help_.other_variables, defaults, help_.note
        )
    lines = variables_section(help_)
    if help_.note:
        lines += ["", *textwrap.wrap(help_.note, WIDTH)]
    return "\n".join([*lines, "", *exit_section(help_.exit_codes)])


def main_epilog() -> str:
    """`dashboard --help`: every variable, and each command's exit codes."""
    lines = variables_section(CommandHelp(variables=None, exit_codes=()))
    lines += ["", "exit codes (see `dashboard COMMAND --help`):"]
    for command, help_ in COMMANDS.items():
        codes = "; ".join(f"{c} {m.split(' (')[0]}" for c, m in help_.exit_codes)
        lines += textwrap.wrap(
            f"{command}: {codes}", WIDTH, initial_indent="  ", subsequent_indent="    "
        )
    return "\n".join(lines)

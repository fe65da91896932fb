"""`dashboard state upgrade`: create or upgrade the dashboard's own schema as the OWNER
role, ahead of (or instead of) the serving processes doing it at start-up.

Also runnable as `python -m dashboard.state upgrade`. The schema lives in
DASHBOARD_STATE_DATABASE_URL's database when that is set, else in the target's
(DASHBOARD_DATABASE_URL). The owner is DASHBOARD_STATE_OWNER_URL (else that URL: the
single-role setup). In the two-role setup the runtime role granted its privileges is
`--grant-to`, else the user named in that URL (no connection is made with it, so the
owner's deployment step needs no runtime password), else the role that URL logs in as.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from sqlalchemy.engine import make_url

from dashboard.settings import Settings, SettingsError

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2


def add_state_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`state upgrade [--grant-to ROLE]` on a parent parser's subcommands."""
    state = sub.add_parser("state", help="the dashboard's own schema (runs, approvals, audit)")
    state_sub = state.add_subparsers(dest="state_command", required=True)
    up = state_sub.add_parser(
        "upgrade", help="create/upgrade the schema as DASHBOARD_STATE_OWNER_URL's role"
    )
    up.add_argument(
        "--grant-to",
        metavar="ROLE",
        help="the runtime role to grant (default: the user of DASHBOARD_STATE_DATABASE_URL, "
        "else of DASHBOARD_DATABASE_URL)",
    )


async def runtime_role_of(url: str) -> str:
    user = make_url(url).username
    if user:
        return user
    from dashboard.state.store import StateStore

    store = StateStore(url)
    try:
        return await store.runtime_role()
    finally:
        await store.stop()


async def upgrade(settings: Settings, grant_to: str | None = None) -> tuple[list[str], str | None]:
    """Applied revisions, and the role granted (None in the single-role setup)."""
    from dashboard.state.migrate import upgrade_state_schema

    # the database holding the schema, and the runtime role's URL there
    runtime_url = settings.state_database_url or settings.database_url
    owner = settings.state_owner_url or runtime_url
    if owner is None:
        raise SettingsError(
            "DASHBOARD_STATE_OWNER_URL",
            "is required (or DASHBOARD_STATE_DATABASE_URL / DASHBOARD_DATABASE_URL for one role)",
        )
    role = grant_to
    if role is None and settings.state_owner_url and runtime_url:
        role = await runtime_role_of(runtime_url)
    applied = await upgrade_state_schema(owner, settings.dashboard_schema, runtime_role=role)
    return applied, role


def run_state_command(args: argparse.Namespace, settings: Settings | None = None) -> int:
    try:
        settings = settings or Settings.from_env()
        applied, role = asyncio.run(upgrade(settings, args.grant_to))
    except SettingsError as exc:
        print(f"dashboard: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        print(f"dashboard: state upgrade failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    schema = settings.dashboard_schema
    print(f"schema {schema}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))
    if role:
        print(f"schema {schema}: runtime role {role} granted its privileges")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard")
    add_state_parser(parser.add_subparsers(dest="command", required=True))
    rest = sys.argv[1:] if argv is None else list(argv)
    return run_state_command(parser.parse_args(["state", *rest]))

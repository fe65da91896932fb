"""Console entry point: `dashboard serve | demo | status | review | user | state`.

Each command's --help ends with the environment variables it reads and its exit codes
(dashboard/cli_help.py, generated from dashboard/settings.py's ENVIRONMENT table)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dashboard.migrations.status import MigrationStatus

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dashboard import cli_help
from dashboard.logs import configure as configure_logging
from dashboard.settings import Settings, SettingsError, is_loopback
from dashboard.state.admin import add_state_parser, run_state_command

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_PENDING = 3
EXIT_INCONSISTENT = 4
EXIT_INTERRUPTED = 130
# uvicorn's sys.exit code when the server cannot start (address in use, lifespan failure)
UVICORN_STARTUP_FAILURE = 3
HELP = argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dashboard",
        description="Schema and pool ops dashboard for PostgreSQL services",
        epilog=cli_help.main_epilog(),
        formatter_class=HELP,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the dashboard for DASHBOARD_DATABASE_URL")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    demo = sub.add_parser("demo", help="embedded PostgreSQL + demo schema + load, on loopback")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--no-load", action="store_true", help="do not start the load simulator")
    status = sub.add_parser("status", help="print where the schema stands; exit 3 if pending")
    status.add_argument("--json", action="store_true", help="print the /api/migrations JSON")
    review = sub.add_parser(
        "review",
        help="review the pending plan: locks, rewrites, findings, live conflicts; exit 0 when "
        "no finding reaches --fail-on, 5 when one does, 1 unreachable, 2 bad config/target",
    )
    review.add_argument("--direction", choices=("upgrade", "downgrade"), default="upgrade")
    review.add_argument("--target", default="heads", help="heads (default), +1, -1, a revision")
    review.add_argument("--json", action="store_true", help="print the /api/review JSON")
    review.add_argument(
        "--fail-on",
        choices=("low", "medium", "high", "never"),
        default="high",
        help="the lowest risk that fails the pipeline (exit 5); default high",
    )
    user = sub.add_parser(
        "user",
        help="manage the users file for DASHBOARD_AUTH_MODE=password (DASHBOARD_USERS_FILE, "
        "default $XDG_CONFIG_HOME or ~/.config, then pg-ops-dashboard/users.txt)",
    )
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="add a user or change a password")
    add.add_argument("name")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (needed without a terminal)",
    )
    rm = user_sub.add_parser("remove", help="remove a user")
    rm.add_argument("name")
    user_sub.add_parser("list", help="list user names")
    add_state_parser(sub)
    for command, child in sub.choices.items():
        defaults = demo_defaults() if command == "demo" else None
        with_epilog(child, cli_help.epilog(command, defaults))
    return parser


def with_epilog(parser: argparse.ArgumentParser, epilog: str) -> None:
    """The command's help tail, on it and on its subcommands (`user add`, `state upgrade`)."""
    parser.epilog = epilog
    parser.formatter_class = HELP
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                with_epilog(child, epilog)


def demo_defaults() -> dict[str, str]:
    """The defaults `dashboard demo` applies where the environment sets nothing."""
    from dashboard.demo.run import DEMO_DIR, DEMO_STATE_DATABASE, demo_environment

    env = demo_environment({}, "-", "-")
    out = {k: v for k, v in env.items() if v != "-"}
    out["DASHBOARD_DATABASE_URL"] = f"an embedded PostgreSQL in {DEMO_DIR / 'pgdata'}"
    out["DASHBOARD_STATE_DATABASE_URL"] = (
        f"database {DEMO_STATE_DATABASE} of the embedded PostgreSQL (else the target)"
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        if args.command == "serve":
            return serve(args.host, args.port)
        if args.command == "demo":
            from dashboard.demo.run import run_demo

            if not is_loopback(args.host):
                raise SettingsError(
                    "--host",
                    f"the demo runs without authentication and only binds to loopback, not {args.host!r}",
                )
            return not_started_is_1(lambda: run_demo(args.host, args.port, load=not args.no_load))
        if args.command == "status":
            return status(as_json=args.json)
        if args.command == "review":
            from dashboard.review.command import ReviewArgs, run_review

            return run_review(ReviewArgs(args.direction, args.target, args.json, args.fail_on))
        if args.command == "state":
            return run_state_command(args)
        if args.command == "user":
            return manage_users(args)
    except SettingsError as exc:
        print(f"dashboard: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def not_started_is_1(run: Callable[[], int]) -> int:
    """uvicorn exits 3 when the server cannot start; this CLI says 1 (3 is `status`'s
    "pending")."""
    try:
        return run()
    except SystemExit as exc:
        if exc.code == UVICORN_STARTUP_FAILURE:
            logging.getLogger("dashboard.cli").error("the server could not start")
            return EXIT_ERROR
        raise


def serve(host: str, port: int) -> int:
    import uvicorn

    from dashboard.app import create_app

    settings = Settings.from_env(require_database=True, host=host)
    app = create_app(settings)
    # log_config=None: uvicorn's error and access loggers keep dashboard/logs.py's format

    def run() -> int:
        uvicorn.run(
            app, host=host, port=port, log_level="info", proxy_headers=False, log_config=None
        )
        return EXIT_OK

    return not_started_is_1(run)


def users_file_path() -> Path:
    """DASHBOARD_USERS_FILE, else the per-user default (the same file the server reads)."""
    from dashboard.settings import default_users_file

    raw = (os.environ.get("DASHBOARD_USERS_FILE") or "").strip()
    return Path(raw) if raw else default_users_file()


def read_new_password(name: str, from_stdin: bool) -> str:
    """The password from standard input (`--password-stdin`) or typed twice at a terminal.
    Raises UsersFileError (nothing is written) when there is no terminal to ask on."""
    import getpass

    from dashboard.auth.users import UsersFileError

    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsersFileError("no terminal to read the password from: use --password-stdin")
    try:
        password = getpass.getpass(f"password for {name}: ")
        again = getpass.getpass("again: ")
    except (EOFError, getpass.GetPassWarning):
        raise UsersFileError(
            "no terminal to read the password from: use --password-stdin"
        ) from None
    if again != password:
        raise UsersFileError("passwords do not match")
    return password


def manage_users(args: argparse.Namespace) -> int:
    from dashboard.auth import users

    path = users_file_path()
    try:
        if args.user_command == "list":
            for name in sorted(users.load(path)):
                print(name)
            return EXIT_OK
        if args.user_command == "remove":
            users.remove(path, args.name)
            print(f"removed {args.name} from {path}")
            return EXIT_OK
        users.validate_name(args.name)
        password = read_new_password(args.name, args.password_stdin)
        new = users.add(path, args.name, password)
        print(f"{'added' if new else 'updated'} {args.name} in {path}")
        return EXIT_OK
    except users.UsersFileError as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def status(*, as_json: bool) -> int:
    from dashboard.db import create_diagnostics_engine, describe_error
    from dashboard.migrations.status import StatusService
    from dashboard.targets import Target

    settings = Settings.from_env(require_database=True)
    assert settings.database_url is not None

    async def read() -> MigrationStatus:
        engine = create_diagnostics_engine(settings.database_url or "")
        try:
            service = StatusService(
                engine,
                Target.from_settings(settings),
                exclude_schemas=settings.own_schemas_in_target,
            )
            return await service.read(fresh=True)
        finally:
            await engine.dispose()

    try:
        st = asyncio.run(read())
    except Exception as exc:
        print(f"dashboard: database unreachable: {describe_error(exc)}", file=sys.stderr)
        return EXIT_ERROR
    if as_json:
        print(json.dumps(st.to_json(), indent=2, default=str))
    else:
        print(render_status_text(st))
    if st.state == "up_to_date":
        return EXIT_OK
    if st.state in ("pending", "uninitialized"):
        return EXIT_PENDING
    return EXIT_INCONSISTENT


def render_status_text(st: MigrationStatus) -> str:
    from dashboard.formatting import state_label

    lines = [
        f"state:    {st.state} ({state_label(st.state)})",
        f"current:  {', '.join(st.current) or '(none)'}",
        f"heads:    {', '.join(st.heads) or '(none)'}",
        f"pending:  {len(st.pending)}",
    ]
    for r in st.pending:
        flag = f"  [irreversible: {r.irreversible_reason}]" if r.irreversible else ""
        lines.append(f"  {r.revision}  {r.message}{flag}")
    for e in st.script_errors:
        lines.append(f"error loading {e.file}: {e.error}")
    lines.append(st.explanation)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

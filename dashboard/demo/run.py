"""`dashboard demo`: start everything, serve, and on Ctrl-C stop everything it started."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import uvicorn

from dashboard.demo.banner import DemoStartup, banner_lines
from dashboard.settings import Settings, normalize_database_url

log = logging.getLogger("dashboard.demo")

DEMO_DATABASE = "shop"
# The dashboard's own schema (runs, audit, history, incidents) on the embedded server: in a
# database of its own, never reset, so the history outlives a demo restart while the shop
# database starts over with migrations pending.
DEMO_STATE_DATABASE = "dashboard_state"
DEMO_DIR = Path(".demo")


def say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def demo_environment(
    environ: Mapping[str, str], url: str, state_url: str | None = None
) -> dict[str, str]:
    """The demo's settings: the caller's environment with the demo database, and the demo's
    defaults where the caller set nothing (no sign-in, no approval rule, a small pool; with
    the embedded server, the dashboard's state in a database that is never reset)."""
    env = dict(environ)
    env["DASHBOARD_DATABASE_URL"] = url
    if state_url is not None:
        env.setdefault("DASHBOARD_STATE_DATABASE_URL", state_url)
    env.setdefault("DASHBOARD_AUTH_MODE", "none")
    env.setdefault("DASHBOARD_REQUIRE_APPROVAL", "false")
    env.setdefault("DASHBOARD_POOL_SIZE", "5")
    env.setdefault("DASHBOARD_MAX_OVERFLOW", "2")
    env.setdefault("DASHBOARD_POOL_TIMEOUT", "5")
    env.setdefault("DASHBOARD_LEAK_THRESHOLD_S", "10")
    return env


def startup_banner(
    settings: Settings, host: str, port: int, *, embedded: bool, load: bool, psql: str = "psql"
) -> list[str]:
    """The lines printed once the demo serves, from the settings it runs with."""
    assert settings.database_url is not None
    return banner_lines(
        DemoStartup(
            host=host,
            port=port,
            database_url=settings.database_url,
            embedded=embedded,
            require_approval=settings.require_approval,
            allow_self_approval=settings.allow_self_approval,
            auth_mode=settings.auth_mode,
            load=load,
            data_dir=str(DEMO_DIR / "pgdata"),
            psql=psql,
            state_database_url=settings.state_database_url,
        )
    )


def psql_command(embedded: bool) -> str:
    """The psql to suggest: the one on PATH, else (embedded server) pgserver's own."""
    if shutil.which("psql") or not embedded:
        return "psql"
    try:
        import pgserver
    except ImportError:
        return "psql"
    bin_dir = getattr(pgserver, "POSTGRES_BIN_PATH", None)  # re-exported by a star import
    bundled = Path(bin_dir) / "psql" if bin_dir is not None else None
    return str(bundled) if bundled is not None and bundled.exists() else "psql"


def run_demo(host: str, port: int, *, load: bool = True) -> int:
    from dashboard.demo.embedded import EmbeddedPostgres

    embedded: EmbeddedPostgres | None = None
    state_url: str | None = None
    user_url = os.environ.get("DASHBOARD_DATABASE_URL")
    try:
        if user_url:
            url = normalize_database_url(user_url)
            say(f"using DASHBOARD_DATABASE_URL (database {url.rsplit('/', 1)[-1]})")
            fresh = False
        else:
            say(f"starting embedded PostgreSQL (pgserver) in {DEMO_DIR / 'pgdata'} ...")
            embedded = EmbeddedPostgres(DEMO_DIR / "pgdata")
            server_uri = embedded.start()
            from dashboard.demo.seed import ensure_database, recreate_database

            asyncio.run(recreate_database(server_uri, DEMO_DATABASE))
            asyncio.run(ensure_database(server_uri, DEMO_STATE_DATABASE))
            url = normalize_database_url(embedded.uri(DEMO_DATABASE))
            state_url = normalize_database_url(embedded.uri(DEMO_STATE_DATABASE))
            fresh = True
        env = demo_environment(os.environ, url, state_url if embedded is not None else None)
        settings = Settings.from_env(env, require_database=True, host=host)
        settings = settings.with_overrides(demo=True)
        asyncio.run(
            _serve(settings, host, port, load=load, fresh=fresh, embedded=embedded is not None)
        )
    except KeyboardInterrupt:
        pass
    finally:
        if embedded is not None:
            say("stopping embedded PostgreSQL")
            embedded.stop()
    say("stopped")
    return 0


async def _serve(
    settings: Settings, host: str, port: int, *, load: bool, fresh: bool, embedded: bool
) -> None:
    from dashboard.app import create_app
    from dashboard.db import create_observed_engine
    from dashboard.demo.seed import DEMO_START_REVISION, migrate_to_start
    from dashboard.demo.simulator import LoadSimulator

    assert settings.database_url is not None
    migrated = await migrate_to_start(settings.database_url, settings.script_location)
    if migrated:
        say(f"demo schema migrated to {DEMO_START_REVISION} and seeded: migrations are pending")
    elif not fresh:
        say("the database already has a version table: left as it is")
    # The observed "application" engine: the simulator drives load through it, so the
    # Pool page shows a real pool under pressure.
    engine = create_observed_engine(
        settings.database_url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_s,
        application_name="demo-shop",
    )
    app = create_app(settings, engines={"main": engine})
    simulator = LoadSimulator(engine) if load else None
    # log_config=None: uvicorn logs in the one format set by dashboard/logs.py (cli.py)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", log_config=None
    )
    server = uvicorn.Server(config)
    serve_task = asyncio.create_task(server.serve())
    while not server.started and not serve_task.done():
        await asyncio.sleep(0.05)
    if serve_task.done():
        await serve_task
        return
    if simulator is not None:
        await simulator.start()
    lines = startup_banner(
        settings, host, port, embedded=embedded, load=load, psql=psql_command(embedded)
    )
    print("\n".join(lines), file=sys.stderr, flush=True)
    try:
        await serve_task
    finally:
        if simulator is not None:
            await simulator.stop()
        await engine.dispose()

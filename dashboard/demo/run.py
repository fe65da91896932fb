"""`dashboard demo`: start everything, serve, and on Ctrl-C stop everything it started."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import uvicorn

from dashboard.settings import Settings, normalize_database_url

log = logging.getLogger("dashboard.demo")

DEMO_DATABASE = "shop"
DEMO_DIR = Path(".demo")


def say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def run_demo(host: str, port: int, *, load: bool = True) -> int:
    from dashboard.demo.embedded import EmbeddedPostgres

    embedded: EmbeddedPostgres | None = None
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
            from dashboard.demo.seed import recreate_database

            asyncio.run(recreate_database(server_uri, DEMO_DATABASE))
            url = normalize_database_url(embedded.uri(DEMO_DATABASE))
            fresh = True
        env = dict(os.environ)
        env["DASHBOARD_DATABASE_URL"] = url
        env.setdefault("DASHBOARD_AUTH_MODE", "none")
        env.setdefault("DASHBOARD_REQUIRE_APPROVAL", "false")
        env.setdefault("DASHBOARD_POOL_SIZE", "5")
        env.setdefault("DASHBOARD_MAX_OVERFLOW", "2")
        env.setdefault("DASHBOARD_POOL_TIMEOUT", "5")
        env.setdefault("DASHBOARD_LEAK_THRESHOLD_S", "10")
        settings = Settings.from_env(env, require_database=True, host=host)
        settings = settings.with_overrides(demo=True)
        asyncio.run(_serve(settings, host, port, load=load, fresh=fresh))
    except KeyboardInterrupt:
        pass
    finally:
        if embedded is not None:
            say("stopping embedded PostgreSQL")
            embedded.stop()
    say("stopped")
    return 0


async def _serve(settings: Settings, host: str, port: int, *, load: bool, fresh: bool) -> None:
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
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    serve_task = asyncio.create_task(server.serve())
    while not server.started and not serve_task.done():
        await asyncio.sleep(0.05)
    if serve_task.done():
        await serve_task
        return
    say(
        f"dashboard ready: http://{host}:{port}  (Ctrl-C stops the server, the load and PostgreSQL)"
    )
    if simulator is not None:
        await simulator.start()
        say("load simulator running: a lock pile-up and a pool burst every ~40 s")
    try:
        await serve_task
    finally:
        if simulator is not None:
            await simulator.stop()
        await engine.dispose()

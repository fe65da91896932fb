"""What `dashboard demo` prints once it serves (pure): where the dashboard is, where the demo
database is (a URL to paste into psql and the DASHBOARD_DATABASE_URL form), and that
approval is off in the demo, unlike in production.

`run.py` gathers the facts (settings, whether the server is the embedded one, which psql
to suggest) and prints `banner_lines()`; nothing here does I/O.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from sqlalchemy.engine import URL, make_url

__all__ = ["DemoStartup", "banner_lines", "dashboard_url", "database_urls"]

RULE = "=" * 78
LOAD_CYCLE_S = 40  # LoadSimulator's default cycle


@dataclass(frozen=True)
class DemoStartup:
    """The facts the start-up banner states."""

    host: str
    port: int
    database_url: str  # the target, postgresql+asyncpg://… (as Settings holds it)
    embedded: bool  # the embedded pgserver PostgreSQL (else the user's DASHBOARD_DATABASE_URL)
    require_approval: bool
    allow_self_approval: bool = False
    auth_mode: str = "none"
    load: bool = True
    data_dir: str = ".demo/pgdata"
    psql: str = "psql"  # the psql to suggest (the one on PATH, else pgserver's own)
    state_database_url: str | None = None  # where the dashboard keeps runs, audit, history


@dataclass(frozen=True)
class DatabaseUrls:
    psql: str  # postgresql://… for psql (libpq)
    dashboard: str  # postgresql+asyncpg://… for DASHBOARD_DATABASE_URL
    database: str  # the database's name
    where: str  # host:port, or the socket directory
    password_hidden: bool


def dashboard_url(host: str, port: int) -> str:
    """http://host:port, with an IPv6 address in brackets."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


def _render(url: URL, drivername: str) -> str:
    """The URL with its query rendered for libpq and asyncpg alike: percent-encoding
    (never "+" for a space, which libpq would keep), "/" left as it is (socket paths);
    an empty password left out; a password hidden."""
    base = URL.create(
        drivername,
        username=url.username,
        password=url.password or None,
        host=url.host,
        port=url.port,
        database=url.database,
    ).render_as_string(hide_password=True)
    pairs = [(k, v) for k, vs in url.query.items() for v in ((vs,) if isinstance(vs, str) else vs)]
    if not pairs:
        return base
    return base + "?" + urlencode(pairs, quote_via=quote, safe="/")


def database_urls(raw: str) -> DatabaseUrls:
    """The demo database's URL in psql's form and in DASHBOARD_DATABASE_URL's form."""
    url = make_url(raw)
    socket = url.query.get("host")
    socket_dir = socket if isinstance(socket, str) else (socket[0] if socket else None)
    if url.host:
        where = f"{url.host}:{url.port or 5432}"
    else:
        where = f"socket in {socket_dir}" if socket_dir else "local socket"
    return DatabaseUrls(
        psql=_render(url, "postgresql"),
        dashboard=_render(url, "postgresql+asyncpg"),
        database=url.database or "",
        where=where,
        password_hidden=bool(url.password),
    )


def banner_lines(s: DemoStartup) -> list[str]:
    """The lines `dashboard demo` prints once the dashboard serves."""
    urls = database_urls(s.database_url)
    if s.embedded:
        server = (
            f"on the embedded PostgreSQL (pgserver; data in {s.data_dir}; up while the demo runs)"
        )
    else:
        server = f"at {urls.where} (your DASHBOARD_DATABASE_URL)"
    hidden = "  (password hidden)" if urls.password_hidden else ""
    lines = [
        RULE,
        "pg ops dashboard: demo",
        "",
        f"  Dashboard      {dashboard_url(s.host, s.port)}",
        f"  Database       {urls.database} {server}",
        f"    psql         {shlex.quote(s.psql)} {shlex.quote(urls.psql)}{hidden}",
        f"    to reuse it  DASHBOARD_DATABASE_URL={shlex.quote(urls.dashboard)}{hidden}",
    ]
    if s.state_database_url:
        state = database_urls(s.state_database_url)
        lines += [
            f"  History        runs, audit, samples and incidents in database {state.database}:",
            f"                 kept across demo restarts ({urls.database} starts over each time)",
        ]
    if s.require_approval:
        lines += [
            "  Approval       ON (DASHBOARD_REQUIRE_APPROVAL=true): an upgrade waits for a",
            "                 second person's approval, as in production.",
        ]
    else:
        lines += [
            "  Approval       OFF in demo mode: an upgrade runs at once, without a second",
            "                 person. In production DASHBOARD_REQUIRE_APPROVAL defaults to",
            "                 true: an operator's upgrade waits for an approver's approval.",
        ]
    if s.allow_self_approval:
        lines.append("                 Downgrades need an approval (yours counts here).")
    else:
        lines += [
            "                 Downgrades always need an approval by someone else",
            "                 (DASHBOARD_ALLOW_SELF_APPROVAL=true lets you approve your own).",
        ]
    if s.auth_mode == "none":
        lines.append(
            "  Sign-in        none (demo): loopback clients only, each one an admin named local"
        )
    else:
        lines.append(f"  Sign-in        DASHBOARD_AUTH_MODE={s.auth_mode}")
    if s.load:
        lines.append(
            f"  Load           a lock pile-up and a pool burst every ~{LOAD_CYCLE_S} s "
            "(--no-load turns it off)"
        )
    else:
        lines.append("  Load           off (--no-load)")
    stops = (
        "the server, the load and the embedded PostgreSQL"
        if s.embedded
        else ("the server and the load; your PostgreSQL keeps running")
    )
    lines += [f"  Ctrl-C         stops {stops}", RULE]
    return lines

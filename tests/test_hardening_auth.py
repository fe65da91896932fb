"""Identity hardening on real PostgreSQL.

- `DASHBOARD_AUTH_MODE=none` is enforced by the app on every request (peer address), not
  by how the server was bound: started by `uvicorn --factory` on 0.0.0.0 or mounted in a
  FastAPI host, a non-loopback client gets 403 with the reason on every route but the
  load-balancer probes, the refusal is audited once, and nothing is signalled.
- Ambiguous proxy identity headers (several X-Forwarded-User / X-Forwarded-Groups, or one
  user value naming several users) from a trusted proxy: 400 with the reason, audited.
- `dashboard user add` without a terminal fails cleanly; the users file lives in a private
  per-user config folder, never in the working directory.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from dashboard.app import create_app
from dashboard.auth.identity import NONE_MODE_REFUSAL, ambiguous_identity, is_loopback_peer
from dashboard.settings import Settings
from tests.peer import client_from, csrf_token
from tests.waiting import wait_until_async

ROOT = Path(__file__).resolve().parent.parent
REMOTE = "192.0.2.2"
NO_TTY_ERROR = "no terminal to read the password from: use --password-stdin"


def app_for(db_url: str, **env: str) -> Litestar:
    base = {"DASHBOARD_DATABASE_URL": db_url, "DASHBOARD_SECRET_KEY": "k" * 32}
    base.update(env)
    return create_app(Settings.from_env(base))


async def audit_rows(plain_db_url: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(plain_db_url)
    try:
        rows = await conn.fetch("SELECT * FROM dashboard.audit ORDER BY id")
    finally:
        await conn.close()
    return [dict(r) | {"detail": json.loads(r["detail"])} for r in rows]


@asynccontextmanager
async def victim_backend(plain_db_url: str) -> AsyncIterator[tuple[asyncpg.Connection, int, str]]:
    """A live backend someone could try to terminate: (connection, pid, backend_start)."""
    conn = await asyncpg.connect(plain_db_url)
    try:
        pid, started = await conn.fetchrow(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        assert isinstance(started, datetime)
        yield conn, int(pid), started.isoformat()
    finally:
        await conn.close()


async def backend_alive(plain_db_url: str, pid: int) -> bool:
    conn = await asyncpg.connect(plain_db_url)
    try:
        found = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await conn.close()
    return bool(found)


# --- cause 4: none mode serves loopback clients only, whatever started the app ---------------

PAGES_AND_APIS = (
    "/",
    "/locks",
    "/pool",
    "/audit",
    "/api/migrations",
    "/api/pool",
    "/api/audit",
    "/audit.csv",
    "/metrics",
    "/static/style.css",
    "/login",
)


async def test_none_mode_refuses_non_loopback_clients_on_every_route(
    db_url: str, plain_db_url: str
) -> None:
    app = app_for(db_url, DASHBOARD_AUTH_MODE="none")
    async with victim_backend(plain_db_url) as (_, pid, started):
        async with client_from(app, REMOTE) as remote:
            for path in PAGES_AND_APIS:
                # a browser asking for a page gets the JSON error too
                r = await remote.get(path, headers={"accept": "text/html"})
                assert r.status_code == 403, (path, r.status_code)
                assert r.json()["error"] == NONE_MODE_REFUSAL, path
            # load balancers keep their probes
            assert (await remote.get("/healthz")).status_code == 200
            ready = await remote.get("/readyz")
            assert ready.status_code == 200, ready.text
            token = await csrf_token(remote)
            kill = await remote.post(
                f"/api/backends/{pid}/terminate",
                json={"backend_start": started, "confirm": str(pid)},
                headers={"x-csrftoken": token},
            )
            assert kill.status_code == 403, kill.text
            assert kill.json()["error"] == NONE_MODE_REFUSAL
        assert await backend_alive(plain_db_url, pid)
        for loopback in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
            async with client_from(app, loopback) as local:
                r = await local.get("/api/migrations")
                assert r.status_code == 200, (loopback, r.text)
        async with AsyncTestClient(app) as in_process:  # Litestar's own test client
            assert (await in_process.get("/api/migrations")).status_code == 200


async def test_none_mode_refusal_is_audited_once_per_request(
    db_url: str, plain_db_url: str
) -> None:
    app = app_for(db_url, DASHBOARD_AUTH_MODE="none")
    async with victim_backend(plain_db_url) as (_, pid, started):
        async with client_from(app, REMOTE) as remote:
            assert (await remote.get("/healthz")).status_code == 200
            page = await remote.get("/locks", headers={"X-Forwarded-User": "alice"})
            assert page.status_code == 403
            token = str(remote.cookies.get("csrftoken"))
            kill = await remote.post(
                f"/api/backends/{pid}/terminate",
                json={"backend_start": started},
                headers={"x-csrftoken": token},
            )
            assert kill.status_code == 403

            async def two_rows() -> list[dict[str, Any]] | None:
                rows = await audit_rows(plain_db_url)
                return rows if len(rows) >= 2 else None

            rows = await wait_until_async(two_rows, what="the two refusals in the audit table")
        assert await backend_alive(plain_db_url, pid)
    assert len(rows) == 2, rows  # once each; nothing for the probe
    get_row, post_row = rows
    assert (get_row["action"], get_row["outcome"]) == ("auth.identity", "denied")
    assert (post_row["action"], post_row["outcome"]) == ("backend.terminate", "denied")
    for row in rows:
        assert row["address"] == REMOTE
        assert row["detail"]["refusal"] == "auth_mode_none_remote_client"
        assert row["detail"]["peer"] == REMOTE
        assert row["detail"]["error"] == NONE_MODE_REFUSAL
    assert get_row["detail"]["path"] == "/locks"


async def test_none_mode_mounted_in_fastapi_refuses_the_real_remote_client(db_url: str) -> None:
    engine = create_async_engine(db_url, pool_size=1, max_overflow=0)
    ops = create_app(Settings(auth_mode="none"), engines={"main": engine})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with ops.lifespan():
            yield
        await engine.dispose()

    host = FastAPI(lifespan=lifespan)
    host.mount("/ops", ops)  # type: ignore[arg-type]

    def client(peer: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=host, client=(peer, 51000))
        return httpx.AsyncClient(transport=transport, base_url="http://shop.test")

    async with host.router.lifespan_context(host):
        async with client(REMOTE) as remote:
            for path in ("/ops/", "/ops/api/pool", "/ops/metrics"):
                r = await remote.get(path)
                assert r.status_code == 403, (path, r.status_code)
                assert r.json()["error"] == NONE_MODE_REFUSAL
            assert (await remote.get("/ops/healthz")).status_code == 200
        async with client("127.0.0.1") as local:
            r = await local.get("/ops/api/pool")
            assert r.status_code == 200 and r.json()["pools"][0]["name"] == "main"


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (for a real non-loopback peer)."""
    candidates: list[str] = []
    for probe in ("192.0.2.254", "10.255.255.255", "198.51.100.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((probe, 9))  # UDP: picks the outgoing address, sends nothing
            except OSError:
                continue
            candidates.append(str(s.getsockname()[0]))
    try:
        candidates += [
            str(info[4][0])
            for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        ]
    except OSError:
        pass
    for address in candidates:
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


@contextmanager
def uvicorn_factory(
    env: dict[str, str], port: int, log_file: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`uvicorn --factory dashboard.app:create_app --host 0.0.0.0` (no `dashboard serve`)."""
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "dashboard.app:create_app"]
            + ["--host", "0.0.0.0", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


async def test_none_mode_under_uvicorn_factory_on_all_interfaces(
    db_url: str, tmp_path: Path
) -> None:
    address = non_loopback_address()
    if address is None:  # pragma: no cover
        msg = "this machine has no non-loopback IPv4 address to connect from"
        if os.environ.get("CI"):
            pytest.fail(msg + " -- may not be skipped in CI")
        pytest.skip(msg)
    port = free_port()
    env = dict(os.environ) | {
        "DASHBOARD_DATABASE_URL": db_url,
        "DASHBOARD_AUTH_MODE": "none",
        "DASHBOARD_SECRET_KEY": "k" * 32,
        "PYTHONPATH": str(ROOT),
    }
    log_file = tmp_path / "uvicorn.log"
    with uvicorn_factory(env, port, log_file) as proc:
        async with httpx.AsyncClient(timeout=10) as http:

            async def up() -> bool:
                assert proc.poll() is None, log_file.read_text(errors="replace")
                r = await http.get(f"http://127.0.0.1:{port}/healthz")
                return r.status_code == 200

            await wait_until_async(
                up, timeout_s=30, what="uvicorn to serve /healthz", ignoring=(httpx.TransportError,)
            )
            remote = await http.get(f"http://{address}:{port}/api/activity")
            assert remote.status_code == 403, remote.text
            assert remote.json()["error"] == NONE_MODE_REFUSAL
            assert (await http.get(f"http://{address}:{port}/healthz")).status_code == 200
            local = await http.get(f"http://127.0.0.1:{port}/api/activity")
            assert local.status_code == 200, local.text


# --- cause 5: ambiguous identity headers from a trusted proxy ----------------------------------


@asynccontextmanager
async def raw_headers_client(app: Litestar, peer: str) -> AsyncIterator[httpx.AsyncClient]:
    """Like `client_from`, but header lines reach the app exactly as sent: Litestar's test
    client joins repeated headers into one comma-separated line, as a proxy may."""
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as c:
            yield c


async def test_ambiguous_identity_headers_are_refused_and_audited(
    db_url: str, plain_db_url: str
) -> None:
    app = app_for(db_url, DASHBOARD_ROLES="alice=admin,group:dba=approver")
    ambiguous: list[tuple[list[tuple[str, str]], int, int]] = [
        # (header lines, X-Forwarded-User count, X-Forwarded-Groups count)
        ([("X-Forwarded-User", "alice"), ("X-Forwarded-User", "mallory")], 2, 0),
        ([("X-Forwarded-User", "mallory"), ("X-Forwarded-User", "alice")], 2, 0),
        ([("X-Forwarded-User", "alice, mallory")], 1, 0),
        (
            [
                ("X-Forwarded-User", "bob"),
                ("X-Forwarded-Groups", "web"),
                ("X-Forwarded-Groups", "dba"),
            ],
            1,
            2,
        ),
    ]
    async with raw_headers_client(app, "127.0.0.1") as proxy:
        for headers, _, _ in ambiguous:
            r = await proxy.get("/api/migrations", headers=headers)
            assert r.status_code == 400, (headers, r.status_code)
            assert "ambiguous identity from proxy 127.0.0.1" in r.json()["error"]
        token = await csrf_token(proxy)  # type: ignore[arg-type]
        run = await proxy.post(
            "/api/runs",
            json={"direction": "upgrade", "target": "heads"},
            headers=[
                ("x-csrftoken", token),
                ("X-Forwarded-User", "carol"),
                ("X-Forwarded-User", "alice"),
            ],
        )
        assert run.status_code == 400, run.text
        # one header each: honoured as before
        ok = await proxy.get(
            "/", headers=[("X-Forwarded-User", "bob"), ("X-Forwarded-Groups", "web, dba")]
        )
        assert ok.status_code == 200 and "bob · approver" in ok.text

        async def five_rows() -> list[dict[str, Any]] | None:
            rows = await audit_rows(plain_db_url)
            return rows if len(rows) >= 5 else None

        rows = await wait_until_async(five_rows, what="five identity refusals audited")
    assert len(rows) == 5, rows  # once per refused request, nothing for the good one
    for row, (_, users, groups) in zip(rows, ambiguous, strict=False):
        assert (row["action"], row["outcome"]) == ("auth.identity", "refused")
        assert row["detail"]["x_forwarded_user_headers"] == users
        assert row["detail"]["x_forwarded_groups_headers"] == groups
    for row in rows:
        assert row["address"] == "127.0.0.1" and row["detail"]["peer"] == "127.0.0.1"
        assert row["detail"]["refusal"] == "ambiguous_identity_headers"
        assert row["detail"]["status_code"] == 400
        assert row["actor"] == "anonymous"
    assert (rows[-1]["action"], rows[-1]["detail"]["claimed_users"]) == (
        "run.request",
        ["carol", "alice"],
    )
    conn = await asyncpg.connect(plain_db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM dashboard.runs") == 0
    finally:
        await conn.close()


async def test_repeated_user_header_joined_by_the_client_or_a_proxy_is_refused(
    db_url: str,
) -> None:
    """Litestar's test client (like some proxies) joins repeated headers with a comma."""
    app = app_for(db_url, DASHBOARD_ROLES="alice=admin")
    async with client_from(app, "127.0.0.1") as proxy:
        r = await proxy.get(
            "/api/migrations",
            headers=[("X-Forwarded-User", "mallory"), ("X-Forwarded-User", "alice")],
        )
        assert r.status_code == 400, r.text
        assert "names several users" in r.json()["error"]
        assert (
            await proxy.get("/api/migrations", headers={"X-Forwarded-User": "alice"})
        ).is_success


def test_which_identity_headers_are_ambiguous() -> None:
    assert ambiguous_identity(["alice"], ["web, dba"], "10.0.0.1") is None
    assert ambiguous_identity([], [], "10.0.0.1") is None
    # an odd name with a comma is one name (it can only match the `*` role anyway)
    assert ambiguous_identity(['=HYPERLINK("x",A1)'], [], "10.0.0.1") is None
    for users, groups in (
        (["alice", "alice"], []),
        (["alice, mallory"], []),
        (["alice@example.com,mallory@example.org"], []),
        (["alice"], ["web", "dba"]),
        ([], ["web", "dba"]),
    ):
        refusal = ambiguous_identity(users, groups, "10.0.0.1")
        assert refusal is not None and refusal.status_code == 400, (users, groups)
        assert refusal.detail["peer"] == "10.0.0.1"
    assert [is_loopback_peer(a) for a in ("127.0.0.2", "::1", "::ffff:127.0.0.1")] == [True] * 3
    assert not any(is_loopback_peer(a) for a in ("192.0.2.2", "::ffff:192.0.2.2", "", "host"))


async def test_ambiguous_headers_from_an_untrusted_peer_are_still_just_ignored(
    db_url: str,
) -> None:
    app = app_for(db_url)
    async with client_from(app, "203.0.113.9") as untrusted:
        r = await untrusted.get(
            "/api/migrations",
            headers=[("X-Forwarded-User", "alice"), ("X-Forwarded-User", "bob")],
        )
        assert r.status_code == 401 and "TRUSTED_PROXIES" in r.json()["error"]


# --- cause 10: `dashboard user` without a terminal, and where the users file lives ----------


def run_cli(
    args: list[str], *, home: Path, cwd: Path, stdin: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DASHBOARD_USERS_FILE", "XDG_CONFIG_HOME", "HOME")
    }
    env |= {"HOME": str(home), "PYTHONPATH": str(ROOT)} | (extra or {})
    return subprocess.run(
        [sys.executable, "-m", "dashboard.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        start_new_session=True,  # no controlling terminal: /dev/tty cannot be opened
    )


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_user_add_without_a_terminal_fails_cleanly_and_writes_nothing(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    xdg = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    done = run_cli(["user", "add", "dave"], home=home, cwd=work, stdin="pw\n", extra=xdg)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert NO_TTY_ERROR in done.stderr
    assert "Traceback" not in done.stderr
    assert files_under(tmp_path) == ["home", "work"]  # nothing written anywhere


def test_user_file_defaults_to_a_private_per_user_config_path(tmp_path: Path) -> None:
    home, work, xdg = tmp_path / "home", tmp_path / "work", tmp_path / "xdg"
    home.mkdir()
    work.mkdir()
    password = "a long enough password\n"
    with_xdg = {"XDG_CONFIG_HOME": str(xdg)}
    done = run_cli(
        ["user", "add", "dave", "--password-stdin"],
        home=home,
        cwd=work,
        stdin=password,
        extra=with_xdg,
    )
    assert done.returncode == 0, done.stderr
    users_file = xdg / "pg-ops-dashboard" / "users.txt"
    assert str(users_file) in done.stdout
    assert stat.S_IMODE(users_file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    assert users_file.read_text().splitlines()[-1].startswith("dave:$argon2")
    listed = run_cli(["user", "list"], home=home, cwd=work, stdin="", extra=with_xdg)
    assert listed.stdout.split() == ["dave"]
    assert files_under(work) == []  # never the working directory
    assert files_under(home) == []

    # without XDG_CONFIG_HOME (or with a relative one, which the XDG spec says to ignore)
    for extra in ({}, {"XDG_CONFIG_HOME": "relative/config"}):
        done = run_cli(
            ["user", "add", "erin", "--password-stdin"],
            home=home,
            cwd=work,
            stdin=password,
            extra=extra,
        )
        assert done.returncode == 0, done.stderr
        in_home = home / ".config" / "pg-ops-dashboard" / "users.txt"
        assert stat.S_IMODE(in_home.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(in_home.stat().st_mode) == 0o600
        assert files_under(work) == []

    # DASHBOARD_USERS_FILE is still honoured
    chosen = tmp_path / "etc" / "users"
    done = run_cli(
        ["user", "add", "frank", "--password-stdin"],
        home=home,
        cwd=work,
        stdin=password,
        extra={"DASHBOARD_USERS_FILE": str(chosen)},
    )
    assert done.returncode == 0, done.stderr
    assert chosen.read_text().splitlines()[-1].startswith("frank:$argon2")


async def test_server_reads_the_users_file_the_cli_wrote(db_url: str, tmp_path: Path) -> None:
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    home.mkdir()
    done = run_cli(
        ["user", "add", "dave", "--password-stdin"],
        home=home,
        cwd=tmp_path,
        stdin="a long enough password\n",
        extra={"XDG_CONFIG_HOME": str(xdg)},
    )
    assert done.returncode == 0, done.stderr
    app = app_for(
        db_url,
        DASHBOARD_AUTH_MODE="password",
        DASHBOARD_ROLES="dave=operator",
        XDG_CONFIG_HOME=str(xdg),
        HOME=str(home),
    )
    async with AsyncTestClient(app) as client:
        await client.get("/login")
        token = str(client.cookies.get("csrftoken"))
        login = await client.post(
            "/login",
            data={"username": "dave", "password": "a long enough password", "_csrf_token": token},
            follow_redirects=False,
        )
        assert login.status_code in (302, 303), login.text
        page = await client.get("/")
        assert page.status_code == 200 and "dave · operator" in page.text


def test_gitignore_keeps_a_legacy_users_file_out_of_the_repository() -> None:
    lines = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "dashboard-users.txt" in lines

"""Does a migration stall the web server, and what does a run page cost its viewers?

Starts the dashboard with uvicorn (a real server, a real event loop) on a scratch
database and measures, over HTTP:

1. `/healthz` latency while a revision computes in Python for 6 s (a backfill loop), run
   from `POST /api/runs`; and while the offline SQL preview of that revision renders
   (`GET /runs/new`), with `/api/migrations` (a page's JSON twin) beside it.
2. Bytes per poll for a viewer that is up to date with a 3,000-revision run (it sits on
   its last revision, so it stays `running`): the run page's polled panel and its log
   poll, and the JSON log twin.

`--tree DIR` runs the same measurements against another checkout of the dashboard (for
example the commit before the rebuild: `git worktree add /tmp/before 7ad972c`), so
before and after are measured side by side in one run:

    .venv/bin/python bench/bench_responsive.py --tree /tmp/before

Targets (issue 10): /healthz p99 < 50 ms and worst < 250 ms while a revision computes or
a preview renders; < 10 KiB per poll for an up-to-date viewer of a 3,000-revision run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runner import create_db, drop_db, server_url, url_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY_SECONDS = 6.0

SLOW_REVISION = '''"""a backfill that computes in Python

Revision ID: {rev}
Revises: {down}
Create Date: 2026-11-29 10:00:00
"""

import time

from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < {seconds}:
        n += sum(i * i for i in range(200))
    op.execute("SELECT 1")


def downgrade() -> None:
    pass
'''

CHAIN_REVISION = '''"""step {i}

Revision ID: {rev}
Revises: {down}
Create Date: 2026-11-29 10:00:00
"""

from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute({sql!r})


def downgrade() -> None:
    pass
'''


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.count += 1


def elements(html: str) -> int:
    """How many elements a page has (its DOM, give or take text nodes)."""
    parser = _Elements()
    parser.feed(html)
    return parser.count


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def empty_scripts(dest: Path) -> Path:
    shutil.copytree(
        ROOT / "alembic", dest, ignore=shutil.ignore_patterns("__pycache__", "versions")
    )
    (dest / "versions").mkdir()
    return dest


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def start_server(tree: Path, url: str, scripts: Path) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "DASHBOARD_DATABASE_URL": url,
        "DASHBOARD_SCRIPT_LOCATION": str(scripts),
        "DASHBOARD_AUTH_MODE": "none",
        "DASHBOARD_REQUIRE_APPROVAL": "false",
        "DASHBOARD_SECRET_KEY": "bench-secret-key-bench-secret-key",
        "DASHBOARD_LOCK_TIMEOUT_MS": "60000",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "dashboard.app:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=open(os.environ.get("BENCH_SERVER_LOG", os.devnull), "ab"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as c:
        for _ in range(300):
            try:
                if (await c.get(f"{base}/readyz")).status_code == 200:
                    return Server(proc, base)
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise SystemExit(
                    "the dashboard server exited (set BENCH_SERVER_LOG=file to see why)"
                )
            await asyncio.sleep(0.1)
    raise SystemExit("server did not become ready")


@asynccontextmanager
async def client(base: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as c:
        await c.get("/runs")  # the CSRF cookie
        c.headers["x-csrftoken"] = c.cookies.get("csrftoken") or ""
        yield c


async def probe(base: str, path: str, stop: asyncio.Event) -> list[float]:
    """Latency of `path`, once every 20 ms, until `stop` is set."""
    times: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            r = await c.get(path)
            times.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, (path, r.status_code)
            await asyncio.sleep(0.02)
    return times


def summary(times: list[float]) -> str:
    q = statistics.quantiles(times, n=100, method="inclusive") if len(times) >= 2 else times * 99
    return (
        f"n={len(times):4d}  p50 {statistics.median(times):7.1f} ms  p99 {q[98]:7.1f} ms  "
        f"worst {max(times):7.1f} ms"
    )


async def stall(tree: Path, server: str) -> None:
    db = await create_db(server)
    tmp = Path(tempfile.mkdtemp())
    try:
        scripts = empty_scripts(tmp / "scripts")
        (scripts / "versions" / "slow_py.py").write_text(
            SLOW_REVISION.format(rev="a1slowpython", down=None, seconds=PY_SECONDS)
        )
        srv = await start_server(tree, url_for(server, db, "postgresql+asyncpg"), scripts)
        try:
            async with client(srv.base) as c:
                # a preview render (the confirmation page) while /healthz is probed
                stop = asyncio.Event()
                probes = [
                    asyncio.create_task(probe(srv.base, p, stop))
                    for p in ("/healthz", "/api/migrations")
                ]
                await asyncio.sleep(0.3)
                t0 = time.perf_counter()
                page = await c.get("/runs/new", params={"direction": "upgrade", "target": "heads"})
                render_s = time.perf_counter() - t0
                stop.set()
                health, migrations = [await p for p in probes]
                assert page.status_code == 200, page.text[:300]
                print(f"  preview render ({render_s:4.1f} s)   /healthz        {summary(health)}")
                print(
                    f"  preview render ({render_s:4.1f} s)   /api/migrations {summary(migrations)}"
                )
                # the revision itself, run from the API
                stop = asyncio.Event()
                probes = [asyncio.create_task(probe(srv.base, "/healthz", stop))]
                await asyncio.sleep(0.3)
                t0 = time.perf_counter()
                r = await c.post(
                    "/api/runs",
                    json={"direction": "upgrade", "target": "heads", "expected_current": []},
                )
                assert r.status_code == 202, r.text
                run_id = r.json()["id"]
                while True:
                    run = (await c.get(f"/api/runs/{run_id}")).json()
                    if run["status"] not in ("queued", "running", "awaiting_approval"):
                        break
                    await asyncio.sleep(0.2)
                run_s = time.perf_counter() - t0
                stop.set()
                (health,) = [await p for p in probes]
                assert run["status"] == "succeeded", run["error"]
                print(f"  upgrade run    ({run_s:4.1f} s)   /healthz        {summary(health)}")
        finally:
            srv.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        await drop_db(server, db)


async def poll_size(tree: Path, server: str, n: int) -> None:
    db = await create_db(server)
    tmp = Path(tempfile.mkdtemp())
    try:
        scripts = empty_scripts(tmp / "scripts")
        down = None
        for i in range(n):
            rev = f"c{i:05d}chain0"
            sql = "SELECT pg_sleep(600)" if i == n - 1 else "SELECT 1"
            (scripts / "versions" / f"{rev}.py").write_text(
                CHAIN_REVISION.format(i=i, rev=rev, down=down, sql=sql)
            )
            down = rev
        srv = await start_server(tree, url_for(server, db, "postgresql+asyncpg"), scripts)
        try:
            async with client(srv.base) as c:
                r = await c.post(
                    "/api/runs",
                    json={"direction": "upgrade", "target": "heads", "expected_current": []},
                )
                assert r.status_code == 202, r.text
                run_id = r.json()["id"]
                for _ in range(3000):
                    run = (await c.get(f"/api/runs/{run_id}")).json()
                    if run["progress"].get("done") == n - 1 and run["status"] == "running":
                        break
                    assert run["status"] in ("queued", "running"), run["error"]
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1.0)  # the heartbeat stores the last lines
                page = await c.get(f"/runs/{run_id}")
                htmx = {"HX-Request": "true"}
                panel = await c.get(f"/runs/{run_id}", headers=htmx)
                sizes = {"page (first load)": len(page.content), "panel poll": len(panel.content)}
                log = await c.get(f"/api/runs/{run_id}/log", params={"after": 0})
                if log.status_code == 200:
                    last = log.json()["last"]
                    while True:  # catch up, as a viewer would
                        more = (
                            await c.get(f"/api/runs/{run_id}/log", params={"after": last})
                        ).json()
                        if not more["entries"]:
                            break
                        last = more["last"]
                    lines = await c.get(f"/runs/{run_id}/log", params={"after": last}, headers=htmx)
                    api_log = await c.get(f"/api/runs/{run_id}/log", params={"after": last})
                    sizes["log poll (HTML)"] = len(lines.content)
                    sizes["log poll (JSON)"] = len(api_log.content)
                    per_poll = sizes["panel poll"] + sizes["log poll (HTML)"]
                else:
                    per_poll = sizes["panel poll"]
                for k, v in sizes.items():
                    print(f"  {k:<20} {v / 1024:9.1f} KiB")
                print(f"  page elements        {elements(page.text):9d}")
                print(
                    f"  => bytes per poll for an up-to-date viewer: {per_poll / 1024:.1f} KiB "
                    f"({n} revisions)"
                )
                await c.post(f"/api/runs/{run_id}/cancel")
        finally:
            srv.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        await drop_db(server, db)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--tree",
        action="append",
        type=Path,
        default=[],
        help="another checkout to measure beside this one (repeatable)",
    )
    ap.add_argument("--revisions", type=int, default=3000)
    ap.add_argument("--skip-stall", action="store_true")
    ap.add_argument("--skip-poll", action="store_true")
    args = ap.parse_args()
    trees = [*args.tree, ROOT]
    with server_url() as server:
        for tree in trees:
            label = "this tree" if tree == ROOT else str(tree)
            print(f"== {label}")
            if not args.skip_stall:
                await stall(tree, server)
            if not args.skip_poll:
                await poll_size(tree, server, args.revisions)


if __name__ == "__main__":
    asyncio.run(main())

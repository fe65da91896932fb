"""Every request has an id: a valid incoming `X-Request-ID` is honoured, anything else is
replaced; the response returns it in its header; and every log line of the request (the
dashboard's, uvicorn's access line) carries it, in the one log format of dashboard/logs.py.

Real PostgreSQL, a real uvicorn server (in a thread, as `dashboard serve` runs it: our
logging, `log_config=None`), and `dashboard serve` itself in a child process.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from dashboard import logs
from dashboard.app import create_app
from dashboard.runs.service import RunService
from dashboard.settings import Settings
from dashboard.web.request_id import VALID
from tests.live_server import free_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
# LEVEL TIME LOGGER MESSAGE [key=value ...]
LINE = re.compile(
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) +"
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<logger>\S+) (?P<message>.*)$"
)


def app_for(db_url: str) -> Litestar:
    return create_app(
        Settings.from_env(
            {
                "DASHBOARD_DATABASE_URL": db_url,
                "DASHBOARD_AUTH_MODE": "none",
                "DASHBOARD_SECRET_KEY": "k" * 32,
            }
        )
    )


# --- pure: the id's shape and the formatter ---------------------------------------------------


def test_what_counts_as_a_valid_incoming_id() -> None:
    for good in ("abc", "5f0c9a1e-2b7d-4c31-9d3e-8a7b6c5d4e3f", "lb:1234.5_x"):
        assert VALID.fullmatch(good), good
    for bad in ("", "has space", "new\nline", "x" * 101, "-leading-dash", 'quote"d', "é"):
        assert not VALID.fullmatch(bad), bad


def test_the_format_is_level_time_logger_message_fields() -> None:
    formatter = logs.LogfmtFormatter()
    record = logging.LogRecord(
        "dashboard.runs", logging.WARNING, __file__, 1, "a\nb %s", ("c",), None
    )
    record.request_id = "r1"
    record.run_id = 7
    record.note = "two words"
    line = formatter.format(record)
    match = LINE.fullmatch(line)
    assert match, line
    assert match["level"] == "WARNING" and match["logger"] == "dashboard.runs"
    assert match["message"] == 'a\\nb c  run_id=7 note="two words" request_id=r1'
    access = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("10.0.0.7:5123", "GET", "/locks?x=1", "1.1", 200),
        None,
    )
    access.request_id = None
    assert formatter.format(access).endswith(
        "uvicorn.access GET /locks?x=1 200  client=10.0.0.7:5123 http=1.1"
    )


# --- in process: the header -------------------------------------------------------------------


async def test_the_response_carries_a_new_or_the_honoured_request_id(db_url: str) -> None:
    async with AsyncTestClient(app_for(db_url)) as client:
        ids = set()
        for path in ("/healthz", "/api/migrations", "/no-such-page", "/locks"):
            r = await client.get(path)
            rid = r.headers.get("x-request-id")
            assert rid and re.fullmatch(r"[0-9a-f]{16}", rid), (path, rid)
            ids.add(rid)
        assert len(ids) == 4, "each request gets its own id"
        mine = "5f0c9a1e-2b7d-4c31-9d3e-8a7b6c5d4e3f"
        r = await client.get("/healthz", headers={"x-request-id": mine})
        assert r.headers["x-request-id"] == mine
        for bad in ("has space", "x" * 101, "evil\tvalue"):
            r = await client.get("/healthz", headers={"x-request-id": bad})
            assert r.headers["x-request-id"] != bad
            assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"])
        # one id per response, never the client's twice
        r = await client.get("/healthz", headers=[("x-request-id", "a1"), ("x-request-id", "b2")])
        assert r.headers.get_list("x-request-id") not in (["a1"], ["b2"])
        assert len(r.headers.get_list("x-request-id")) == 1


# --- a real server: the log lines ----------------------------------------------------------------


@contextmanager
def served_like_dashboard_serve(app: Litestar) -> Iterator[tuple[str, io.StringIO]]:
    """uvicorn in a thread with the dashboard's logging (`logs.configure`, `log_config=None`,
    access log on, as `dashboard serve`); yields (base URL, the formatted log)."""
    import uvicorn

    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.configure(stream=stream)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="info", lifespan="on", log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"request-id-{port}", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), what="uvicorn to start")
        assert thread.is_alive(), "uvicorn did not start"
        yield f"http://127.0.0.1:{port}", stream
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        root.removeHandler(handler)
        root.setLevel(level)


def records_of(caplog: pytest.LogCaptureFixture, rid: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "request_id", None) == rid]


def test_every_log_line_of_a_request_carries_its_id(
    db_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    with served_like_dashboard_serve(app_for(db_url)) as (base, stream):
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/api/runs").status_code == 200  # the state schema is ready

            async def broken(self: RunService, limit: int = 50) -> list[dict[str, Any]]:
                raise RuntimeError("the list of runs is broken")

            monkeypatch.setattr(RunService, "list_runs", broken)
            failed = http.get("/api/runs", headers={"x-request-id": "req-broken-1"})
            assert failed.status_code == 500
            assert failed.headers["x-request-id"] == "req-broken-1"
            fresh = http.get("/no-such-page")
            fresh_id = fresh.headers["x-request-id"]

            def logged() -> list[logging.LogRecord] | None:
                mine = records_of(caplog, "req-broken-1")
                names = {r.name for r in mine}
                done = {"dashboard.errors", "uvicorn.access"} <= names
                return mine if done and records_of(caplog, fresh_id) else None

            mine = wait_until(logged, what="the request's error and access lines")
    # the dashboard's own line and uvicorn's access line, both with the id
    errors = [r for r in mine if r.name == "dashboard.errors"]
    assert errors and "GET /api/runs -> 500" in errors[0].getMessage()
    access = [r for r in mine if r.name == "uvicorn.access"]
    assert len(access) == 1 and access[0].args and access[0].args[-1] == 500  # type: ignore[index]
    # a request that answered 404 outside any route has its id on its access line too
    assert [r.name for r in records_of(caplog, fresh_id)] == ["uvicorn.access"]
    # and the formatted log: one format, the id on both lines
    text = stream.getvalue()
    lines = [ln for ln in text.splitlines() if "request_id=req-broken-1" in ln]
    assert len(lines) == 2, text
    for ln in lines:
        assert LINE.fullmatch(ln), ln
    assert any(" dashboard.errors GET /api/runs -> 500" in ln for ln in lines), lines
    assert any(" uvicorn.access GET /api/runs 500  client=127.0.0.1:" in ln for ln in lines), lines


def test_dashboard_serve_logs_in_one_format_with_request_ids(db_url: str, tmp_path: Path) -> None:
    """The real command: every line it writes (start-up, uvicorn's, the access log) is in
    the one format, and the access line of a request carries its id."""
    port = free_port()
    env = dict(os.environ) | {
        "DASHBOARD_DATABASE_URL": db_url,
        "DASHBOARD_AUTH_MODE": "none",
        "DASHBOARD_SAMPLE_INTERVAL_S": "1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DASHBOARD_SECRET_KEY", None)  # so that the start-up warning is logged
    log_file = tmp_path / "serve.log"
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

                def up() -> bool:
                    assert proc.poll() is None, log_file.read_text(errors="replace")
                    return http.get("/healthz").status_code == 200

                wait_until(
                    up, timeout_s=30, what="dashboard serve", ignoring=(httpx.TransportError,)
                )
                r = http.get("/locks", headers={"x-request-id": "serve-req-7"})
                assert r.headers["x-request-id"] == "serve-req-7"

                def access_logged() -> bool:
                    return "request_id=serve-req-7" in log_file.read_text(errors="replace")

                wait_until(access_logged, what="the access line of the request")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    lines = [ln for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
    odd = [ln for ln in lines if not LINE.fullmatch(ln)]
    assert not odd, "lines not in the one format:\n" + "\n".join(odd)
    loggers = {m["logger"] for ln in lines if (m := LINE.fullmatch(ln))}
    assert {"dashboard.app", "uvicorn.error", "uvicorn.access"} <= loggers, loggers
    [access] = [ln for ln in lines if "request_id=serve-req-7" in ln]
    assert " uvicorn.access GET /locks 200  client=127.0.0.1:" in access, access

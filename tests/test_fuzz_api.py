"""A bounded fuzz run of the HTTP API (hypothesis): every operation of the app's own
OpenAPI schema, with hostile path and query values and JSON (or not-JSON) bodies, as an
admin with a valid CSRF token, as a viewer, and without the token. Nothing may answer 5xx.

The server is real (uvicorn on a real PostgreSQL database), so what is found is what a
client would meet. Bounded to a fixed number of examples (well under a minute).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.app import create_app
from dashboard.settings import Settings
from tests.live_server import live_server
from tests.migrate import alembic_to
from tests.runs_support import BASE, DEMO

EXAMPLES = 300

# Values a hostile client sends where an id, a revision or a filter is expected.
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "\x00",
            "a\x00b",
            "-1",
            "0",
            "9" * 30,
            "1e309",
            "NaN",
            "heads",
            "base",
            "+1",
            "-1",
            "../../etc/passwd",
            "'; DROP TABLE x; --",
            "<script>alert(1)</script>",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "\u202e\ufeff",
            "%",
            "run.*",
        ]
    ),
)
HOSTILE_INT = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, -1, 2**63, 2**63 - 1])
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), HOSTILE_TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(HOSTILE_TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)
KNOWN_KEYS = [
    "direction",
    "target",
    "expected_current",
    "sql_sha256",
    "comment",
    "reason",
    "backend_start",
]
HOSTILE_BODIES = st.sampled_from(
    ["[" * 5000, "[" * 5000 + "]" * 5000, "{" * 3000, '{"a":' * 2000, "not json", "\x00", "", "{}"]
)
BODIES = st.one_of(
    st.dictionaries(st.sampled_from(KNOWN_KEYS), JSON_VALUES, max_size=5).map(json.dumps),
    HOSTILE_BODIES,
    JSON_VALUES.map(json.dumps),
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
)


def operations(schema: dict[str, Any]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    ops = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            if path == "/logout":
                continue  # it only ends the fuzzer's own session
            ops.append((method.upper(), path, list(op.get("parameters") or [])))
    return sorted(ops)


def test_no_request_gets_a_5xx(db_url: str, tmp_path: Path) -> None:
    asyncio.run(alembic_to(db_url, DEMO, BASE))
    app = create_app(
        Settings.from_env(
            {
                "DASHBOARD_DATABASE_URL": db_url,
                "DASHBOARD_AUTH_MODE": "proxy",
                "DASHBOARD_ROLES": "alice=admin,*=viewer",
                "DASHBOARD_SECRET_KEY": "fuzz-secret-key-fuzz-secret-key-00",
                "DASHBOARD_USERS_FILE": str(tmp_path / "users.txt"),
            }
        )
    )
    with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        client.headers["x-forwarded-user"] = "alice"
        client.get("/runs")
        token = client.cookies.get("csrftoken") or ""
        ops = operations(client.get("/schema/openapi.json").json())
        assert len(ops) > 30
        posts = [op for op in ops if op[0] == "POST"]  # the unsafe ones get half the draws
        failures: list[str] = []

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data())
        def fuzz(data: st.DataObject) -> None:
            method, path, params = data.draw(
                st.one_of(st.sampled_from(posts), st.sampled_from(ops)), label="operation"
            )
            url = path
            query: dict[str, str] = {}
            for p in params:
                value = data.draw(st.one_of(HOSTILE_TEXT, HOSTILE_INT.map(str)), label=p["name"])
                if p.get("in") == "path":
                    url = url.replace("{" + p["name"] + "}", quote(value, safe=""))
                elif p.get("in") == "query" and data.draw(st.booleans()):
                    query[p["name"]] = value
            url = re.sub(r"\{[^}]+\}", "1", url)
            who = data.draw(
                st.sampled_from(["alice", "alice", "alice", "victor", None]), label="who"
            )
            headers = {"x-forwarded-user": who} if who else {}
            if method == "POST":
                if data.draw(st.sampled_from([True, True, True, False]), label="csrf"):
                    headers["x-csrftoken"] = token
                headers["content-type"] = data.draw(
                    st.sampled_from(
                        [
                            "application/json",
                            "application/json",
                            "application/x-www-form-urlencoded",
                        ]
                    )
                )
                body = data.draw(BODIES, label="body").encode("utf-8", "surrogatepass")
                r = client.request(method, url, params=query, headers=headers, content=body)
            else:
                r = client.request(method, url, params=query, headers=headers)
            if r.status_code >= 500:
                failures.append(f"{method} {url} {query} -> {r.status_code}: {r.text[:200]}")
            assert r.status_code < 500, failures[-1]

        fuzz()
        assert failures == []

"""What `dashboard demo` prints once it serves, pure (no database, no server): the
dashboard's URL, the demo database's URL for psql and for DASHBOARD_DATABASE_URL, and that
approval is off in the demo while production defaults to it on."""

from __future__ import annotations

import inspect
import shlex

from sqlalchemy.engine import make_url

from dashboard.demo.banner import (
    LOAD_CYCLE_S,
    DemoStartup,
    banner_lines,
    dashboard_url,
    database_urls,
)
from dashboard.demo.run import demo_environment, startup_banner
from dashboard.demo.simulator import LoadSimulator
from dashboard.settings import Settings, normalize_database_url

# what pgserver hands out: a socket directory, an empty password
EMBEDDED = "postgresql://postgres:@/shop?host=/home/me/my project/.demo/pgdata"


def flat(lines: list[str]) -> str:
    """The banner as one line of words (sentences wrap across lines)."""
    return " ".join(" ".join(lines).split())


def value_after(lines: list[str], label: str) -> str:
    """The shell words after a label, e.g. the URL on the psql line."""
    [line] = [ln for ln in lines if ln.strip().startswith(label)]
    return line.strip()[len(label) :].strip()


def demo_settings(url: str, **environ: str) -> Settings:
    env = demo_environment(environ, normalize_database_url(url))
    return Settings.from_env(env, require_database=True, host="127.0.0.1")


def test_the_embedded_demo_says_where_it_is_and_that_approval_is_off() -> None:
    lines = startup_banner(demo_settings(EMBEDDED), "127.0.0.1", 8000, embedded=True, load=True)
    text = flat(lines)
    assert value_after(lines, "Dashboard") == "http://127.0.0.1:8000"
    # psql's form: plain postgresql://, no empty password, the socket path readable by libpq
    psql, url = shlex.split(value_after(lines, "psql"))
    assert psql == "psql"
    assert url == "postgresql://postgres@/shop?host=/home/me/my%20project/.demo/pgdata"
    parsed = make_url(url)
    assert parsed.database == "shop" and parsed.query["host"] == "/home/me/my project/.demo/pgdata"
    # the DASHBOARD_DATABASE_URL form, which the settings accept as they are
    [assignment] = shlex.split(value_after(lines, "to reuse it"))
    name, _, value = assignment.partition("=")
    assert name == "DASHBOARD_DATABASE_URL"
    assert value.startswith("postgresql+asyncpg://postgres@/shop?host=")
    assert make_url(value).query["host"] == "/home/me/my project/.demo/pgdata"
    assert normalize_database_url(value) == normalize_database_url(url)
    assert "embedded PostgreSQL" in text and ".demo/pgdata" in text
    # approval: off here, on by default in production; downgrades still need someone else
    assert "Approval OFF in demo mode: an upgrade runs at once, without a second person" in text
    assert "In production DASHBOARD_REQUIRE_APPROVAL defaults to true" in text
    assert "Downgrades always need an approval by someone else" in text
    assert "loopback clients only" in text
    assert f"every ~{LOAD_CYCLE_S} s" in text
    assert "stops the server, the load and the embedded PostgreSQL" in text
    assert all(len(line) <= 110 for line in lines if "://" not in line)


def test_the_banner_follows_the_settings_in_force() -> None:
    settings = demo_settings(
        "postgresql://alice:s%40cret@db.internal:5433/shop",
        DASHBOARD_REQUIRE_APPROVAL="true",
        DASHBOARD_ALLOW_SELF_APPROVAL="true",
    )
    assert settings.require_approval is True
    lines = startup_banner(settings, "::1", 8001, embedded=False, load=False)
    text = flat(lines)
    assert value_after(lines, "Dashboard") == "http://[::1]:8001"
    assert "shop at db.internal:5433 (your DASHBOARD_DATABASE_URL)" in text
    # the password is never printed
    assert "s@cret" not in text and "s%40cret" not in text
    assert "postgresql://alice:***@db.internal:5433/shop" in text and "password hidden" in text
    assert "Approval ON (DASHBOARD_REQUIRE_APPROVAL=true)" in text and "OFF" not in text
    assert "yours counts here" in text
    assert "Load off (--no-load)" in text
    assert "your PostgreSQL keeps running" in text


def test_demo_defaults_leave_what_the_caller_set() -> None:
    env = demo_environment({"DASHBOARD_REQUIRE_APPROVAL": "true", "X": "1"}, "postgresql://h/d")
    assert env["DASHBOARD_REQUIRE_APPROVAL"] == "true" and env["X"] == "1"
    assert env["DASHBOARD_DATABASE_URL"] == "postgresql://h/d"
    plain = demo_environment({}, "postgresql://h/d")
    assert plain["DASHBOARD_REQUIRE_APPROVAL"] == "false" and plain["DASHBOARD_AUTH_MODE"] == "none"


def test_urls_and_the_named_psql() -> None:
    assert dashboard_url("localhost", 9000) == "http://localhost:9000"
    urls = database_urls("postgresql+asyncpg://u@h/d")
    assert urls.psql == "postgresql://u@h/d" and urls.where == "h:5432"
    assert not urls.password_hidden
    lines = banner_lines(
        DemoStartup(
            "127.0.0.1",
            8000,
            normalize_database_url(EMBEDDED),
            embedded=True,
            require_approval=False,
            psql="/opt/pg bin/psql",
        )
    )
    psql, _url = shlex.split(value_after(lines, "psql"))
    assert psql == "/opt/pg bin/psql"


def test_the_load_cycle_named_is_the_simulators() -> None:
    default = inspect.signature(LoadSimulator.__init__).parameters["cycle_s"].default
    assert default == LOAD_CYCLE_S


def test_the_embedded_demo_keeps_its_history_in_a_database_never_reset() -> None:
    state = "postgresql://postgres:@/dashboard_state?host=/home/me/.demo/pgdata"
    env = demo_environment({}, normalize_database_url(EMBEDDED), normalize_database_url(state))
    assert env["DASHBOARD_STATE_DATABASE_URL"].startswith("postgresql+asyncpg://")
    # the caller's own choice wins
    mine = demo_environment(
        {"DASHBOARD_STATE_DATABASE_URL": "postgresql://me@db/mine"},
        normalize_database_url(EMBEDDED),
        normalize_database_url(state),
    )
    assert mine["DASHBOARD_STATE_DATABASE_URL"] == "postgresql://me@db/mine"
    settings = Settings.from_env(env, require_database=True, host="127.0.0.1")
    text = flat(startup_banner(settings, "127.0.0.1", 8000, embedded=True, load=True))
    assert "History runs, audit, samples and incidents in database dashboard_state" in text
    assert "kept across demo restarts (shop starts over each time)" in text
    # with the user's own database there is no separate state database to mention
    plain = flat(
        startup_banner(demo_settings(EMBEDDED), "127.0.0.1", 8000, embedded=True, load=True)
    )
    assert "History" not in plain

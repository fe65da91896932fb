"""Settings from the environment, validated once at start-up.

Every problem is reported as a `SettingsError` naming the variable and what is
wrong, so the CLI can print one line and exit non-zero without a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

ROLES = ("viewer", "operator", "approver", "admin")
AUTH_MODES = ("proxy", "password", "none")
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    script_location: Path = Path("alembic")
    version_table: str = "alembic_version"
    version_table_schema: str | None = None
    auth_mode: str = "proxy"
    trusted_proxies: tuple[IpNetwork, ...] = (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    roles: Mapping[str, str] = field(default_factory=lambda: {"*": "viewer"})
    require_approval: bool = True
    allow_self_approval: bool = False
    approval_ttl_minutes: int = 60
    lock_timeout_ms: int = 3000
    statement_timeout_ms: int = 0
    # Lock attempts per statement that waits for a lock (backoff 0.5 s doubling to 10 s)
    lock_retries: int = 5
    # The pile-up watchdog cancels a migration's lock wait when this many sessions queue
    # behind it, or the oldest of them has waited this long (then the retries take over)
    pileup_max_waiters: int = 5
    pileup_max_wait_ms: int = 1000
    secret_key: str = ""
    secret_key_generated: bool = False
    disable_kill: bool = False
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout_s: float = 30.0
    replicas: int = 1
    sample_interval_s: float = 2.0
    long_query_s: float = 30.0
    leak_threshold_s: float = 60.0
    dashboard_schema: str = "dashboard"
    # Two roles (README "Two roles"): the role that creates and owns the dashboard's schema
    state_owner_url: str | None = None
    # Where the dashboard's schema lives (None: the target database)
    state_database_url: str | None = None
    # How this process's pools are labelled in the fleet view, and its history rows
    service_name: str = "app"
    instance_name: str = field(default_factory=lambda: default_instance_name())
    history: bool = True  # write samples and incidents to the dashboard's schema
    history_retention_days: int = 14
    # a lock pile-up becomes an incident when this many sessions wait behind one root
    # for this long
    incident_min_blocked: int = 3
    incident_min_s: float = 5.0
    # Where rehearsals create their scratch databases (None: the target's server)
    rehearsal_server_url: str | None = None
    rehearsal_timeout_s: float = 30.0  # a longer rehearsal falls back to the offline render
    run_env_py: bool = False
    users_file: Path = field(default_factory=lambda: default_users_file())
    cookie_secure: bool = False
    host: str = "127.0.0.1"
    demo: bool = False

    @property
    def own_schemas_in_target(self) -> tuple[str, ...]:
        """The dashboard's own schema when it lives in the target database (left out of the
        target's schema warnings); nothing when DASHBOARD_STATE_DATABASE_URL puts it in
        another database, where a `dashboard` schema of the target is the application's."""
        if (
            self.state_database_url
            and self.database_url
            and not same_database(self.state_database_url, self.database_url)
        ):
            return ()
        return (self.dashboard_schema,)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        require_database: bool = False,
        host: str = "127.0.0.1",
    ) -> Settings:
        e = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = e.get(name)
            if value is None or value.strip() == "":
                return None
            return value.strip()

        raw_url = get("DASHBOARD_DATABASE_URL")
        if raw_url is None and require_database:
            raise SettingsError(
                "DASHBOARD_DATABASE_URL",
                "is required (for example postgresql+asyncpg://user@host:5432/dbname)",
            )
        database_url = normalize_database_url(raw_url) if raw_url else None

        script_location = Path(get("DASHBOARD_SCRIPT_LOCATION") or "alembic")
        if not script_location.is_dir():
            raise SettingsError(
                "DASHBOARD_SCRIPT_LOCATION",
                f"folder {str(script_location)!r} does not exist",
            )
        if (
            not (script_location / "versions").is_dir()
            and not (script_location / "script.py.mako").is_file()
        ):
            raise SettingsError(
                "DASHBOARD_SCRIPT_LOCATION",
                f"{str(script_location)!r} is not an Alembic script folder "
                "(no versions/ folder and no script.py.mako)",
            )

        version_table = _identifier(
            "DASHBOARD_VERSION_TABLE", get("DASHBOARD_VERSION_TABLE") or "alembic_version"
        )
        schema_raw = get("DASHBOARD_VERSION_TABLE_SCHEMA")
        version_table_schema = (
            _identifier("DASHBOARD_VERSION_TABLE_SCHEMA", schema_raw) if schema_raw else None
        )
        dashboard_schema = _identifier("DASHBOARD_SCHEMA", get("DASHBOARD_SCHEMA") or "dashboard")
        raw_owner_url = get("DASHBOARD_STATE_OWNER_URL")
        state_owner_url = (
            _database_url("DASHBOARD_STATE_OWNER_URL", raw_owner_url) if raw_owner_url else None
        )
        raw_state_url = get("DASHBOARD_STATE_DATABASE_URL")
        state_database_url = (
            _database_url("DASHBOARD_STATE_DATABASE_URL", raw_state_url) if raw_state_url else None
        )
        if state_database_url and state_owner_url:
            _require_same_database(state_database_url, state_owner_url)
        service_name = _label("DASHBOARD_SERVICE_NAME", get("DASHBOARD_SERVICE_NAME") or "app")
        instance_name = _label(
            "DASHBOARD_INSTANCE_NAME", get("DASHBOARD_INSTANCE_NAME") or default_instance_name()
        )
        raw_rehearsal = get("DASHBOARD_REHEARSAL_SERVER_URL")
        rehearsal_server_url = (
            _database_url("DASHBOARD_REHEARSAL_SERVER_URL", raw_rehearsal)
            if raw_rehearsal
            else None
        )

        auth_mode = (get("DASHBOARD_AUTH_MODE") or "proxy").lower()
        if auth_mode not in AUTH_MODES:
            raise SettingsError(
                "DASHBOARD_AUTH_MODE",
                f"{auth_mode!r} is not one of {', '.join(AUTH_MODES)}",
            )
        if auth_mode == "none" and not is_loopback(host):
            raise SettingsError(
                "DASHBOARD_AUTH_MODE",
                f"'none' is only allowed when bound to loopback, not {host!r}",
            )

        trusted = parse_networks(
            "DASHBOARD_TRUSTED_PROXIES", get("DASHBOARD_TRUSTED_PROXIES") or "127.0.0.1/32,::1/128"
        )
        roles = parse_roles(get("DASHBOARD_ROLES") or "*=viewer")

        secret = get("DASHBOARD_SECRET_KEY")
        generated = secret is None
        if secret is not None and len(secret) < 16:
            raise SettingsError("DASHBOARD_SECRET_KEY", "must be at least 16 characters")

        return cls(
            database_url=database_url,
            script_location=script_location,
            version_table=version_table,
            version_table_schema=version_table_schema,
            auth_mode=auth_mode,
            trusted_proxies=trusted,
            roles=roles,
            require_approval=parse_bool(
                "DASHBOARD_REQUIRE_APPROVAL", get("DASHBOARD_REQUIRE_APPROVAL"), True
            ),
            allow_self_approval=parse_bool(
                "DASHBOARD_ALLOW_SELF_APPROVAL", get("DASHBOARD_ALLOW_SELF_APPROVAL"), False
            ),
            approval_ttl_minutes=parse_int(
                "DASHBOARD_APPROVAL_TTL_MINUTES", get("DASHBOARD_APPROVAL_TTL_MINUTES"), 60, 1
            ),
            lock_timeout_ms=parse_int(
                "DASHBOARD_LOCK_TIMEOUT_MS", get("DASHBOARD_LOCK_TIMEOUT_MS"), 3000, 0
            ),
            statement_timeout_ms=parse_int(
                "DASHBOARD_STATEMENT_TIMEOUT_MS", get("DASHBOARD_STATEMENT_TIMEOUT_MS"), 0, 0
            ),
            lock_retries=parse_int("DASHBOARD_LOCK_RETRIES", get("DASHBOARD_LOCK_RETRIES"), 5, 1),
            pileup_max_waiters=parse_int(
                "DASHBOARD_PILEUP_MAX_WAITERS", get("DASHBOARD_PILEUP_MAX_WAITERS"), 5, 1
            ),
            pileup_max_wait_ms=parse_int(
                "DASHBOARD_PILEUP_MAX_WAIT_MS", get("DASHBOARD_PILEUP_MAX_WAIT_MS"), 1000, 50
            ),
            secret_key=secret or secrets.token_urlsafe(32),
            secret_key_generated=generated,
            disable_kill=parse_bool("DASHBOARD_DISABLE_KILL", get("DASHBOARD_DISABLE_KILL"), False),
            pool_size=parse_int("DASHBOARD_POOL_SIZE", get("DASHBOARD_POOL_SIZE"), 5, 1),
            max_overflow=parse_int("DASHBOARD_MAX_OVERFLOW", get("DASHBOARD_MAX_OVERFLOW"), 10, 0),
            pool_timeout_s=parse_float(
                "DASHBOARD_POOL_TIMEOUT", get("DASHBOARD_POOL_TIMEOUT"), 30.0, 0.1
            ),
            replicas=parse_int("DASHBOARD_REPLICAS", get("DASHBOARD_REPLICAS"), 1, 1),
            sample_interval_s=parse_float(
                "DASHBOARD_SAMPLE_INTERVAL_S", get("DASHBOARD_SAMPLE_INTERVAL_S"), 2.0, 0.1
            ),
            long_query_s=parse_float(
                "DASHBOARD_LONG_QUERY_S", get("DASHBOARD_LONG_QUERY_S"), 30.0, 0
            ),
            leak_threshold_s=parse_float(
                "DASHBOARD_LEAK_THRESHOLD_S", get("DASHBOARD_LEAK_THRESHOLD_S"), 60.0, 0.1
            ),
            dashboard_schema=dashboard_schema,
            state_owner_url=state_owner_url,
            state_database_url=state_database_url,
            service_name=service_name,
            instance_name=instance_name,
            history=parse_bool("DASHBOARD_HISTORY", get("DASHBOARD_HISTORY"), True),
            history_retention_days=parse_int(
                "DASHBOARD_HISTORY_RETENTION_DAYS", get("DASHBOARD_HISTORY_RETENTION_DAYS"), 14, 1
            ),
            incident_min_blocked=parse_int(
                "DASHBOARD_INCIDENT_MIN_BLOCKED", get("DASHBOARD_INCIDENT_MIN_BLOCKED"), 3, 1
            ),
            incident_min_s=parse_float(
                "DASHBOARD_INCIDENT_MIN_S", get("DASHBOARD_INCIDENT_MIN_S"), 5.0, 0
            ),
            rehearsal_server_url=rehearsal_server_url,
            rehearsal_timeout_s=parse_float(
                "DASHBOARD_REHEARSAL_TIMEOUT_S", get("DASHBOARD_REHEARSAL_TIMEOUT_S"), 30.0, 0.1
            ),
            run_env_py=parse_bool("DASHBOARD_RUN_ENV_PY", get("DASHBOARD_RUN_ENV_PY"), False),
            users_file=Path(get("DASHBOARD_USERS_FILE") or default_users_file(e)),
            cookie_secure=parse_bool(
                "DASHBOARD_COOKIE_SECURE", get("DASHBOARD_COOKIE_SECURE"), False
            ),
            host=host,
        )


def default_users_file(env: Mapping[str, str] | None = None) -> Path:
    """Where `password` mode keeps its users file when DASHBOARD_USERS_FILE is not set: a
    per-user config path, never the working directory (which is often a repository):
    `$XDG_CONFIG_HOME/pg-ops-dashboard/users.txt`, else `~/.config/pg-ops-dashboard/users.txt`.
    `dashboard user add` creates the folder 0700 and the file 0600."""
    e = os.environ if env is None else env
    xdg = (e.get("XDG_CONFIG_HOME") or "").strip()
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative value is ignored
        base = Path(xdg)
    else:
        home = (e.get("HOME") or "").strip() or os.path.expanduser("~")
        base = Path(home) / ".config"
    return base / "pg-ops-dashboard" / "users.txt"


def normalize_database_url(raw: str) -> str:
    """Accept postgresql:// (and friends) and return a postgresql+asyncpg:// URL."""
    try:
        url: URL = make_url(raw)
    except ArgumentError:
        raise SettingsError(
            "DASHBOARD_DATABASE_URL",
            "is not a database URL (expected postgresql+asyncpg://user@host:5432/dbname)",
        ) from None
    backend = url.get_backend_name()
    if backend not in ("postgresql", "postgres"):
        raise SettingsError(
            "DASHBOARD_DATABASE_URL",
            f"must point at PostgreSQL, not {backend!r}",
        )
    driver = url.get_driver_name()
    if url.drivername not in ("postgresql", "postgres") and driver != "asyncpg":
        raise SettingsError(
            "DASHBOARD_DATABASE_URL",
            f"driver {driver!r} is not supported; use postgresql:// or postgresql+asyncpg://",
        )
    if not url.database:
        raise SettingsError("DASHBOARD_DATABASE_URL", "names no database")
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def _database_url(variable: str, raw: str) -> str:
    """`normalize_database_url`, with problems reported against `variable`."""
    try:
        return normalize_database_url(raw)
    except SettingsError as exc:
        raise SettingsError(variable, exc.problem) from None


def database_of(url: str) -> tuple[str, int, str]:
    """(host, port, database) a URL connects to (defaults as libpq: localhost, 5432)."""
    u = make_url(url)
    return (u.host or "localhost").lower(), u.port or 5432, u.database or ""


def same_database(a: str, b: str) -> bool:
    return database_of(a) == database_of(b)


def _require_same_database(state_url: str, owner_url: str) -> None:
    """Two roles with a separate state database: the owner role must log in there."""
    if same_database(state_url, owner_url):
        return
    host, port, name = database_of(owner_url)
    s_host, s_port, s_name = database_of(state_url)
    raise SettingsError(
        "DASHBOARD_STATE_OWNER_URL",
        f"names database {name!r} on {host}:{port}, but DASHBOARD_STATE_DATABASE_URL "
        f"names {s_name!r} on {s_host}:{s_port}: the owner role creates the dashboard's "
        "schema in the state database, so both must name the same database",
    )


def _identifier(variable: str, value: str) -> str:
    if not value.replace("_", "").isalnum() or value[0].isdigit() or len(value) > 63:
        raise SettingsError(variable, f"{value!r} is not a plain SQL identifier")
    return value


def parse_bool(variable: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    v = value.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise SettingsError(variable, f"{value!r} is not a boolean (use true or false)")


def default_instance_name() -> str:
    """Host name and process id: what tells two replicas of one service apart."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _label(variable: str, value: str) -> str:
    """A service or instance label: printable, at most 200 characters."""
    if len(value) > 200 or not value.isprintable():
        raise SettingsError(variable, f"{value[:40]!r}… must be printable, at most 200 characters")
    return value


def parse_int(variable: str, value: str | None, default: int, minimum: int) -> int:
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        raise SettingsError(variable, f"{value!r} is not a whole number") from None
    if n < minimum:
        raise SettingsError(variable, f"{n} is below the minimum of {minimum}")
    return n


def parse_float(variable: str, value: str | None, default: float, minimum: float) -> float:
    if value is None:
        return default
    try:
        n = float(value)
    except ValueError:
        raise SettingsError(variable, f"{value!r} is not a number") from None
    if n < minimum:
        raise SettingsError(variable, f"{n} is below the minimum of {minimum}")
    return n


def parse_networks(variable: str, value: str) -> tuple[IpNetwork, ...]:
    nets: list[IpNetwork] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise SettingsError(variable, f"{part!r} is not an IP address or CIDR") from None
    return tuple(nets)


def parse_roles(value: str) -> dict[str, str]:
    """Parse `alice=admin,group:ops=operator,*=viewer`."""
    roles: dict[str, str] = {}
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise SettingsError(
                "DASHBOARD_ROLES", f"entry {part!r} is not user=role (e.g. alice=admin)"
            )
        who, role = (s.strip() for s in part.split("=", 1))
        if not who:
            raise SettingsError("DASHBOARD_ROLES", f"entry {part!r} names no user")
        if role not in ROLES:
            raise SettingsError(
                "DASHBOARD_ROLES",
                f"entry {part!r}: role {role!r} is not one of {', '.join(ROLES)}",
            )
        if who in roles:
            raise SettingsError("DASHBOARD_ROLES", f"{who!r} is listed twice")
        roles[who] = role
    roles.setdefault("*", "viewer")
    return roles


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- The environment variables, one table ---------------------------------------------------
# What `Settings.from_env` reads, what it means, and its default: the CLI's --help lists are
# generated from it (dashboard/cli_help.py), and tests/test_cli_help.py checks that it names
# exactly the variables from_env reads, that each literal default is the real default, and
# that README.md's configuration table lists the same variables.


@dataclass(frozen=True)
class EnvVar:
    name: str
    meaning: str
    default: str = ""  # the value from_env uses when unset, written as one would set it
    when_unset: str = ""  # what happens when unset, for variables without a literal default

    @property
    def default_text(self) -> str:
        return self.default or self.when_unset or "none"


ENVIRONMENT: tuple[EnvVar, ...] = (
    EnvVar(
        "DASHBOARD_DATABASE_URL",
        "the target database (postgresql:// or postgresql+asyncpg://)",
        when_unset="required by serve, status and review",
    ),
    EnvVar("DASHBOARD_SCRIPT_LOCATION", "the Alembic script folder to manage", "alembic"),
    EnvVar("DASHBOARD_VERSION_TABLE", "Alembic's version table", "alembic_version"),
    EnvVar(
        "DASHBOARD_VERSION_TABLE_SCHEMA",
        "the schema of the version table",
        when_unset="the search path",
    ),
    EnvVar("DASHBOARD_AUTH_MODE", "proxy, password or none (none only on loopback)", "proxy"),
    EnvVar(
        "DASHBOARD_TRUSTED_PROXIES",
        "addresses (CIDR) allowed to set X-Forwarded-User / X-Forwarded-Groups",
        "127.0.0.1/32,::1/128",
    ),
    EnvVar(
        "DASHBOARD_ROLES",
        "user=role, group:NAME=role and *=role pairs; viewer < operator < approver < admin",
        "*=viewer",
    ),
    EnvVar(
        "DASHBOARD_REQUIRE_APPROVAL",
        "a second person approves upgrades (downgrades always need it)",
        "true",
    ),
    EnvVar("DASHBOARD_ALLOW_SELF_APPROVAL", "the requester may approve their own run", "false"),
    EnvVar("DASHBOARD_APPROVAL_TTL_MINUTES", "how long an approval stays valid", "60"),
    EnvVar("DASHBOARD_LOCK_TIMEOUT_MS", "lock_timeout of each migration lock attempt", "3000"),
    EnvVar(
        "DASHBOARD_STATEMENT_TIMEOUT_MS",
        "statement_timeout of the migration connection (0: none)",
        "0",
    ),
    EnvVar("DASHBOARD_LOCK_RETRIES", "lock attempts per statement that waits for a lock", "5"),
    EnvVar(
        "DASHBOARD_PILEUP_MAX_WAITERS",
        "the watchdog cancels a migration's lock wait when this many sessions queue behind it",
        "5",
    ),
    EnvVar(
        "DASHBOARD_PILEUP_MAX_WAIT_MS",
        "... or when the oldest of them has waited this long",
        "1000",
    ),
    EnvVar(
        "DASHBOARD_SECRET_KEY",
        "signs sessions and CSRF tokens (16+ characters; the same in every process)",
        when_unset="generated per process, with a warning",
    ),
    EnvVar("DASHBOARD_DISABLE_KILL", "no cancel or terminate of backends", "false"),
    EnvVar("DASHBOARD_POOL_SIZE", "pool size of the engine observed by serve", "5"),
    EnvVar("DASHBOARD_MAX_OVERFLOW", "max_overflow of that engine", "10"),
    EnvVar("DASHBOARD_POOL_TIMEOUT", "pool_timeout of that engine, in seconds", "30"),
    EnvVar(
        "DASHBOARD_REPLICAS",
        "copies of the application sharing the database (capacity check)",
        "1",
    ),
    EnvVar("DASHBOARD_SAMPLE_INTERVAL_S", "how often the sampler reads the server", "2"),
    EnvVar("DASHBOARD_LONG_QUERY_S", "when a query counts as long", "30"),
    EnvVar(
        "DASHBOARD_LEAK_THRESHOLD_S",
        "when a checked-out connection is a suspected leak",
        "60",
    ),
    EnvVar("DASHBOARD_SCHEMA", "the dashboard's own schema (runs, approvals, audit)", "dashboard"),
    EnvVar(
        "DASHBOARD_STATE_OWNER_URL",
        "the role that creates and owns the dashboard's schema (two-role setup)",
        when_unset="the runtime role owns it",
    ),
    EnvVar(
        "DASHBOARD_STATE_DATABASE_URL",
        "the database holding the dashboard's schema",
        when_unset="the target database",
    ),
    EnvVar("DASHBOARD_SERVICE_NAME", "this process's service label (fleet view, history)", "app"),
    EnvVar("DASHBOARD_INSTANCE_NAME", "this process's instance label", when_unset="host name:pid"),
    EnvVar("DASHBOARD_HISTORY", "write samples and incidents to the dashboard's schema", "true"),
    EnvVar("DASHBOARD_HISTORY_RETENTION_DAYS", "how long samples and incidents are kept", "14"),
    EnvVar(
        "DASHBOARD_INCIDENT_MIN_BLOCKED",
        "a pile-up is an incident when this many sessions wait behind one root",
        "3",
    ),
    EnvVar("DASHBOARD_INCIDENT_MIN_S", "... for this many seconds", "5"),
    EnvVar(
        "DASHBOARD_REHEARSAL_SERVER_URL",
        "the server where reviews rehearse on scratch databases (needs CREATEDB)",
        when_unset="the target's server",
    ),
    EnvVar(
        "DASHBOARD_REHEARSAL_TIMEOUT_S",
        "a longer rehearsal falls back to the offline render",
        "30",
    ),
    EnvVar(
        "DASHBOARD_RUN_ENV_PY",
        "run the project's own env.py instead of the built-in environment",
        "false",
    ),
    EnvVar(
        "DASHBOARD_USERS_FILE",
        "the users file of password mode",
        when_unset="$XDG_CONFIG_HOME (else ~/.config)/pg-ops-dashboard/users.txt",
    ),
    EnvVar("DASHBOARD_COOKIE_SECURE", "Secure cookies (behind https)", "false"),
)

"""Who is asking.

- `proxy` mode trusts `X-Forwarded-User` (and `X-Forwarded-Groups`) only from trusted proxy
  addresses, and only when they are unambiguous: a proxy that *appends* its header to the
  client's instead of replacing it would otherwise let the client choose its identity, so
  several identity headers, or a user value that is clearly several users joined with a
  comma, refuse the request (400) instead of picking one.
- `none` mode (demo) treats a loopback client as a local admin and refuses everyone else
  (403), whatever started the app (`dashboard serve`, `uvicorn --factory`, a mount in a
  host application): the check is on the peer address of each request, not on how the
  server was bound.

A refusal is carried on the `Identity` (never raised here): the app-wide guard raises it,
and the audit middleware records it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from litestar.connection import ASGIConnection

from dashboard.auth.roles import role_for
from dashboard.settings import Settings

NONE_MODE_REFUSAL = (
    "authentication is disabled (DASHBOARD_AUTH_MODE=none): only loopback clients are "
    "served; set DASHBOARD_AUTH_MODE=proxy or password"
)
# The peer Litestar's (and Starlette's) in-process test client reports: no socket server
# produces it, so it is the same process, like loopback.
IN_PROCESS_CLIENT = "testclient"
USER_HEADER = "x-forwarded-user"
GROUPS_HEADER = "x-forwarded-groups"
# What one user name from an SSO proxy looks like (a login or an e-mail address): a value
# that is two or more of these joined by commas is two users, not one odd name.
USER_TOKEN = re.compile(r"[\w.@+\-]{1,200}")


@dataclass(frozen=True)
class Refusal:
    """Why this request gets no identity at all: the HTTP status, the reason shown to the
    client, and what the audit row records."""

    status_code: int
    reason: str
    kind: str
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Identity:
    name: str | None
    role: str
    groups: tuple[str, ...] = field(default_factory=tuple)
    address: str = ""
    refusal: Refusal | None = None

    @property
    def authenticated(self) -> bool:
        return self.name is not None and self.refusal is None

    @property
    def display(self) -> str:
        return self.name or "anonymous"


def peer_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    client = connection.scope.get("client")
    return str(client[0]) if client else ""


def is_trusted(address: str, settings: Settings) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in settings.trusted_proxies)


def is_loopback_peer(address: str) -> bool:
    """A loopback IP (IPv4-mapped ::ffff:127.x included) or the in-process test client.
    An unknown peer (a Unix socket, usually a local reverse proxy) is not loopback."""
    if address == IN_PROCESS_CLIENT:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def header_values(scope: Mapping[str, Any], name: str) -> list[str]:
    """Every value of header `name` in the raw ASGI headers, in order (not just the first)."""
    wanted = name.encode("latin-1")
    return [
        bytes(v).decode("latin-1")
        for k, v in scope.get("headers") or ()
        if bytes(k).lower() == wanted
    ]


def names_several_users(value: str) -> bool:
    """Pure: `alice, mallory` (a proxy or HTTP library joining repeated headers)."""
    parts = [p.strip() for p in value.split(",")]
    named = [p for p in parts if p]
    return len(named) >= 2 and all(USER_TOKEN.fullmatch(p) for p in named)


def ambiguous_identity(users: list[str], groups: list[str], address: str) -> Refusal | None:
    """Pure: a refusal when the identity headers name more than one identity."""
    several_users = len(users) == 1 and names_several_users(users[0])
    if len(users) <= 1 and len(groups) <= 1 and not several_users:
        return None
    if several_users:
        problem = f"X-Forwarded-User {users[0].strip()[:100]!r} names several users"
    else:
        problem = (
            f"{len(users)} X-Forwarded-User and {len(groups)} X-Forwarded-Groups headers "
            "(at most one of each is allowed)"
        )
    return Refusal(
        status_code=400,
        reason=f"ambiguous identity from proxy {address}: {problem}; the proxy must replace "
        "the identity headers a client sends, not append to them",
        kind="ambiguous_identity_headers",
        detail={
            "x_forwarded_user_headers": len(users),
            "x_forwarded_groups_headers": len(groups),
            "claimed_users": [u.strip()[:200] for u in users[:5]],
            "peer": address,
        },
    )


def identify(connection: ASGIConnection[Any, Any, Any, Any], settings: Settings) -> Identity:
    address = peer_address(connection)
    if settings.auth_mode == "none":
        if is_loopback_peer(address):
            return Identity(name="local", role="admin", address=address)
        remote = Refusal(
            status_code=403,
            reason=NONE_MODE_REFUSAL,
            kind="auth_mode_none_remote_client",
            detail={"peer": address or "unknown"},
        )
        return Identity(name=None, role="viewer", address=address, refusal=remote)
    if settings.auth_mode == "proxy":
        if not is_trusted(address, settings):
            return Identity(name=None, role="viewer", address=address)
        users = header_values(connection.scope, USER_HEADER)
        raw_groups = header_values(connection.scope, GROUPS_HEADER)
        refusal = ambiguous_identity(users, raw_groups, address)
        if refusal is not None:
            return Identity(name=None, role="viewer", address=address, refusal=refusal)
        name = users[0].strip()[:200] if users else ""
        if not name:
            return Identity(name=None, role="viewer", address=address)
        groups = tuple(g.strip() for g in "".join(raw_groups).split(",") if g.strip())
        return Identity(
            name=name,
            role=role_for(name, groups, settings.roles),
            groups=groups,
            address=address,
        )
    # password mode: the session middleware stores the user name after login
    session = connection.scope.get("session") or {}
    user = session.get("user") if isinstance(session, dict) else None
    if user:
        return Identity(name=user, role=role_for(user, (), settings.roles), address=address)
    return Identity(name=None, role="viewer", address=address)

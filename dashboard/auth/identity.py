"""Who is asking. `proxy` mode trusts X-Forwarded-User only from trusted proxy addresses;
`none` mode (demo, loopback only) treats everyone as a local admin."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from litestar.connection import ASGIConnection

from dashboard.auth.roles import role_for
from dashboard.settings import Settings


@dataclass(frozen=True)
class Identity:
    name: str | None
    role: str
    groups: tuple[str, ...] = field(default_factory=tuple)
    address: str = ""

    @property
    def authenticated(self) -> bool:
        return self.name is not None

    @property
    def display(self) -> str:
        return self.name or "anonymous"


def peer_address(connection: ASGIConnection) -> str:
    client = connection.scope.get("client")
    return str(client[0]) if client else ""


def is_trusted(address: str, settings: Settings) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in settings.trusted_proxies)


def identify(connection: ASGIConnection, settings: Settings) -> Identity:
    address = peer_address(connection)
    if settings.auth_mode == "none":
        return Identity(name="local", role="admin", address=address)
    if settings.auth_mode == "proxy":
        user = connection.headers.get("x-forwarded-user")
        if user and is_trusted(address, settings):
            raw_groups = connection.headers.get("x-forwarded-groups", "")
            groups = tuple(g.strip() for g in raw_groups.split(",") if g.strip())
            name = user.strip()[:200]
            return Identity(
                name=name,
                role=role_for(name, groups, settings.roles),
                groups=groups,
                address=address,
            )
        return Identity(name=None, role="viewer", address=address)
    # password mode: the session middleware stores the user name after login
    session = connection.scope.get("session") or {}
    user = session.get("user") if isinstance(session, dict) else None
    if user:
        return Identity(name=user, role=role_for(user, (), settings.roles), address=address)
    return Identity(name=None, role="viewer", address=address)

"""Roles, lowest first. Pure functions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ROLE_ORDER = ("viewer", "operator", "approver", "admin")


def rank(role: str) -> int:
    return ROLE_ORDER.index(role) if role in ROLE_ORDER else -1


def at_least(role: str, required: str) -> bool:
    return rank(role) >= rank(required)


def role_for(user: str | None, groups: Iterable[str], table: Mapping[str, str]) -> str:
    """Highest role granted to the user directly, through a `group:NAME` entry, or by `*`."""
    candidates: list[str] = []
    if user is not None and user in table:
        candidates.append(table[user])
    for g in groups:
        key = f"group:{g}"
        if key in table:
            candidates.append(table[key])
    if not candidates:
        candidates.append(table.get("*", "viewer"))
    return max(candidates, key=rank)

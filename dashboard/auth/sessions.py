"""Password-mode login sessions: the session middleware's configuration, and starting and
ending a session from the login and logout handlers.

The sessions live in the "sessions" store (`session_store.PostgresSessionStore` on the
state database; Litestar's `MemoryStore` without a database). Three things Litestar's
server-side session backend does not do by itself:

- a login gets a new session id, never the one the browser came with (no session
  fixation), written to the store before the answer promises anything: a state database
  that does not answer makes the login a 503 with the reason, not a cookie for a session
  that was never kept;
- a logout deletes the session from the store before answering, so a copy of the cookie
  is worthless on every process, at once;
- the middleware's own writes, made while the answer is already being sent (renewals,
  the empty session of an anonymous visitor), never break that answer when the state
  database goes away: they are logged instead.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from litestar.connection import ASGIConnection
from litestar.middleware.session.server_side import (
    ServerSideSessionBackend,
    ServerSideSessionConfig,
)
from litestar.stores.base import Store

from dashboard.auth.session_store import EMPTY_SESSIONS, SessionStoreUnavailable

log = logging.getLogger(__name__)

SESSION_STORE = "sessions"  # the name of the store in the app's `stores`
SESSION_COOKIE = "session"
SESSION_MAX_AGE_S = 12 * 3600
SESSION_ID_BYTES = 32
# scope["state"] key: the session id a login chose for this answer
_NEW_SESSION_ID = "dashboard_new_session_id"


class SharedSessionBackend(ServerSideSessionBackend):
    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
        chosen = connection.scope.get("state", {}).get(_NEW_SESSION_ID)
        if isinstance(chosen, str):
            return chosen
        return super().get_session_id(connection)

    async def set(self, session_id: str, data: bytes, store: Store) -> None:
        try:
            await super().set(session_id, data, store)
        except SessionStoreUnavailable as exc:
            level = logging.DEBUG if data in EMPTY_SESSIONS else logging.WARNING
            log.log(level, "login session %s… not saved: %s", session_id[:8], exc.detail)

    async def delete(self, session_id: str, store: Store) -> None:
        try:
            await super().delete(session_id, store)
        except SessionStoreUnavailable as exc:
            log.warning("login session %s… not deleted: %s", session_id[:8], exc.detail)


class SharedSessionConfig(ServerSideSessionConfig):
    """`ServerSideSessionConfig` with the backend above."""

    _backend_class = SharedSessionBackend


def session_config(*, secure: bool, exclude: list[str] | None = None) -> SharedSessionConfig:
    return SharedSessionConfig(
        store=SESSION_STORE,
        key=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE_S,
        session_id_bytes=SESSION_ID_BYTES,
        httponly=True,
        samesite="strict",
        secure=secure,
        renew_on_access=True,
        exclude=exclude,
    )


def sessions_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Store:
    return connection.app.stores.get(SESSION_STORE)


async def start_session(
    connection: ASGIConnection[Any, Any, Any, Any], data: dict[str, Any]
) -> None:
    """Log in: `data` under a new session id, stored now (raises `SessionStoreUnavailable`,
    a 503, when the state database does not answer); the session the browser came with is
    deleted."""
    store = sessions_of(connection)
    new_id = secrets.token_hex(SESSION_ID_BYTES)
    payload = ServerSideSessionBackend.serialize_data(data, connection.scope)
    await store.set(new_id, payload, expires_in=SESSION_MAX_AGE_S)
    old_id = connection.cookies.get(SESSION_COOKIE)
    if old_id and old_id != "null":
        await store.delete(old_id)
    connection.scope.setdefault("state", {})[_NEW_SESSION_ID] = new_id
    connection.set_session(data)


async def end_session(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Log out: the session is deleted from the store now (raises `SessionStoreUnavailable`
    when the state database does not answer: a logout that did not happen is not
    reported as done), and the browser's cookie cleared."""
    session_id = connection.cookies.get(SESSION_COOKIE)
    if session_id and session_id != "null":
        await sessions_of(connection).delete(session_id)
    connection.clear_session()

"""One log format for the whole process, and the request id on every line of a request.

    LEVEL   TIME                     LOGGER          MESSAGE  key=value ...
    INFO    2025-06-01T03:12:44.120Z uvicorn.access  GET /locks 200  client=10.0.0.7:51234 http=1.1 request_id=5f0c9a1e2b7d4c31
    WARNING 2025-06-01T03:12:44.410Z dashboard.errors GET /api/x -> 500: ... request_id=5f0c9a1e2b7d4c31

The dashboard's loggers, uvicorn's error log and its access log all go through one handler
with `LogfmtFormatter`. The request id comes from a context variable that
`dashboard.web.request_id` sets for each request; `install_request_id()` makes every log
record carry it as `record.request_id` from the moment it is created, so any handler (the
host application's too, in mounted mode) can print it.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, TextIO

# The id of the request being served in this task (None outside a request).
REQUEST_ID: ContextVar[str | None] = ContextVar("dashboard_request_id", default=None)

# Libraries whose progress lines are noise: their warnings stay.
CHATTY = ("pgserver", "alembic.runtime.migration", "alembic.runtime.plugins", "httpx")
UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")

# The attributes every LogRecord has: anything else was passed with `extra=` and is printed
# as key=value.
_STANDARD = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "color_message",
    "taskName",
}


def current_request_id() -> str | None:
    return REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` (None outside a request) when a record lacks it. Records
    made after `install_request_id()` already carry it; this covers handlers that see
    records created otherwise (e.g. by `logging.makeLogRecord`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


def install_request_id() -> None:
    """Make every log record carry the current request id (`record.request_id`), whatever
    handler receives it (idempotent; wraps the record factory in place)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "_dashboard_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    factory._dashboard_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _quote(value: object) -> str:
    """A logfmt value: bare when it is one plain word, else double-quoted and escaped."""
    text = str(value)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def _one_line(text: str) -> str:
    """A message never spans lines (a logged value cannot forge a log line); tracebacks
    follow the line, as usual."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def access_fields(record: logging.LogRecord) -> tuple[str, dict[str, object]] | None:
    """uvicorn's access record `(client, method, path, http_version, status)` as a message
    `GET /locks 200` and fields (None when the record is not of that shape)."""
    args = record.args
    if record.name != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
        return None
    client, method, path, http_version, status = args
    return f"{method} {path} {status}", {"client": client, "http": http_version}


class LogfmtFormatter(logging.Formatter):
    """`LEVEL TIME LOGGER MESSAGE key=value…`: UTC time with milliseconds; fields passed with
    `extra=`, then the request id, as logfmt pairs; the traceback on the following lines."""

    def format(self, record: logging.LogRecord) -> str:
        access = access_fields(record)
        if access is not None:
            message, fields = access
        else:
            message, fields = record.getMessage(), {}
            for key, value in vars(record).items():
                if key not in _STANDARD and not key.startswith("_"):
                    fields[key] = value
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            fields["request_id"] = request_id
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (
            f"{record.levelname:<7} {stamp}.{int(record.msecs):03d}Z {record.name} "
            f"{_one_line(message)}"
        )
        if fields:
            line += "  " + " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class DashboardHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler `configure()` installs on the root logger (recognised on re-runs)."""


def configure(level: int = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """The process's logging for `dashboard serve` / `demo` and the other commands: one
    handler on the root logger with `LogfmtFormatter`, uvicorn's loggers sending their
    records there (pass `log_config=None` to uvicorn so it does not install its own).
    Handlers others installed on the root logger (a test's capture, say) are kept; a
    previous `configure()`'s handler is replaced. Returns the handler."""
    install_request_id()
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, DashboardHandler)]:
        root.removeHandler(old)
    handler = DashboardHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in UVICORN:
        adopt(logging.getLogger(name))
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def adopt(logger: logging.Logger) -> None:
    """Send a logger's records to the root handler: drop its own handlers and let it
    propagate. A logger someone switched off (no handler, not propagating: uvicorn's
    `--no-access-log`) stays off."""
    if not logger.handlers and not logger.propagate:
        return
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.propagate = True


def configure_if_unconfigured() -> None:
    """For an app built without the CLI (`uvicorn --factory dashboard.app:create_app`):
    the one format, unless the process already logs somewhere (a host application's own
    logging is left alone). Records carry the request id either way."""
    install_request_id()
    if not logging.getLogger().handlers:
        configure()

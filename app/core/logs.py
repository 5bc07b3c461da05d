"""Structured logging: one format for our events and every library's records (JSON lines, or
console lines for a person), dotted event names, bound ids, and no personal data at any level.

docs/logging.md describes the formats, the fields and what is never logged.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from types import TracebackType
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from app.core.settings import LogFormat

# Libraries whose records below these levels carry data off the wire or out of the database
# (SQL parameters and result rows, HTTP headers and URLs with api keys in them), whatever
# IAP_LOG_LEVEL says: an operator's DEBUG is the gateway's own.
LIBRARY_LEVELS = {
    "httpx": logging.WARNING,  # every request at INFO, with its URL
    "httpcore": logging.INFO,  # each response's headers at DEBUG
    "sqlalchemy": logging.WARNING,  # every statement at INFO, rows at DEBUG
    "aiosqlite": logging.INFO,  # each call with its parameters at DEBUG
    "asyncio": logging.INFO,
}
# Set on an exception the gateway has logged itself, so the server's own report of it (the
# same traceback again) is left out.
_LOGGED = "_iap_logged"


def configure_logging(
    level: str = "INFO", log_format: LogFormat = LogFormat.json, *, stream: TextIO | None = None
) -> None:
    """Send structlog's events and the standard library's records to stderr in one format."""
    stream = stream or sys.stderr
    renderer = _renderer(log_format, stream)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_exception,
    ]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, _library_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(_not_logged_already)
    logging.basicConfig(handlers=[handler], level=level.upper(), force=True)
    for name, floor in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(floor)
    # Our own events skip the standard library (it costs on every request): same processors,
    # same renderer, same stream.
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def _renderer(log_format: LogFormat, stream: TextIO) -> Processor:
    if log_format is LogFormat.console:
        return structlog.dev.ConsoleRenderer(colors=stream.isatty(), pad_event_to=30)
    return structlog.processors.JSONRenderer()


def _library_name(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    # Uvicorn reports everything, its start-up included, as "uvicorn.error".
    if event.get("logger") == "uvicorn.error":
        event["logger"] = "uvicorn"
    return event


def _not_logged_already(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not getattr(error, _LOGGED, False)


def mark_logged(error: BaseException) -> None:
    """Say that this exception has been logged, so the server's own report of it is dropped."""
    setattr(error, _LOGGED, True)


# --- Exceptions, without what they quote ------------------------------------------------------

# Exceptions whose messages are written by a driver or by Python about code, not copied from
# input; their messages are logged with quoted text left out. Others (ValueError, pydantic's
# errors, our own) may carry the input itself: only their type is logged.
_MESSAGE_MODULES = ("sqlalchemy.", "asyncpg.", "sqlite3", "aiosqlite", "httpx", "httpcore")
_MESSAGE_TYPES = (
    AttributeError,
    ImportError,
    LookupError,
    NameError,
    NotImplementedError,
    OSError,
    OverflowError,
    RecursionError,
    TypeError,
    ZeroDivisionError,
)
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+")
_DIGITS = re.compile(r"\d[\d\s-]{5,}\d")
_MESSAGE_LIMIT = 500


def redact_exception(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """A processor: the exception of a log call as a traceback whose messages quote nothing."""
    exc_info = event.pop("exc_info", None)
    error = _exception(exc_info)
    if error is not None:
        event["exception"] = redacted_traceback(error)
    return event


def _exception(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple):
        return exc_info[1] if isinstance(exc_info[1], BaseException) else None
    return sys.exc_info()[1] if exc_info else None


def redacted_traceback(error: BaseException) -> str:
    """The traceback of an error and of those it came from: frames, types and redacted messages."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return "\n\nwhich led to:\n\n".join(_one(link.__traceback__, link) for link in reversed(chain))


def _one(tb: TracebackType | None, error: BaseException) -> str:
    frames = "".join(traceback.format_tb(tb))
    return f"Traceback (most recent call last):\n{frames}{describe(error)}"


def error_type(error: BaseException) -> str:
    """The exception's type as `module.Type`."""
    return f"{type(error).__module__}.{type(error).__qualname__}"


def describe(error: BaseException) -> str:
    """`module.Type: message`, the message redacted, or withheld if it may quote input."""
    return f"{error_type(error)}: {safe_message(error)}"


def safe_message(error: BaseException) -> str:
    """The exception's message with what it quotes left out, or withheld if it may be input."""
    if isinstance(error, _MESSAGE_TYPES) or type(error).__module__.startswith(_MESSAGE_MODULES):
        return redacted(_driver_message(error))
    return "(message withheld: it may quote the request)"


def _driver_message(error: BaseException) -> str:
    # SQLAlchemy's message ends with the statement's parameters unless the engine hides them;
    # asyncpg's adds PostgreSQL's DETAIL ("Failing row contains (...)") after the first line.
    message = str(error).split("[parameters:", 1)[0]
    lines = [line for line in message.splitlines() if not line.startswith(("DETAIL:", "HINT:"))]
    return "\n".join(lines).strip()


def redacted(message: str) -> str:
    """A message with quoted text, email addresses and long numbers replaced by `…`."""
    message = _QUOTED.sub("'…'", message)
    message = _EMAIL.sub("…", message)
    message = _DIGITS.sub("…", message)
    return message[:_MESSAGE_LIMIT]

"""Structured logs: one JSON (or console) event per line on stdout, with credentials redacted by construction.

Every line the process writes through structlog or the standard library's `logging` (grpc's Cython
layer, psycopg, redis-py, asyncio) passes one redaction step, `redact`, which replaces anything shaped like
an API key or a bearer value: a caller's bad `authorization` header can reach a library's message (grpc
logs the raw bytes of a header it cannot decode), so no code path is trusted to leave secrets out.
"""

from __future__ import annotations

import logging
import math
import random
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
import structlog

if TYPE_CHECKING:
    from stord.server.config import Settings

from stord.server.rpc.auth import KEY_PREFIX

__all__ = [
    "ALL_CALLS",
    "REDACTED",
    "AccessLog",
    "RedactingFilter",
    "access_log_policies",
    "configure_logging",
    "redact",
    "redact_event",
]

REDACTED = "[redacted]"

_SECRET = re.compile(
    # A bearer value whatever it holds, up to a quote, a comma or whitespace (also in a bytes repr, where a
    # bad byte shows as \xff and an apostrophe ends the value).
    r"(?i:bearer)(?:\s|\\x[0-9a-fA-F]{2}|\\[tnr])+[^\s'\",]*"
    # An API key anywhere, also without its scheme: the prefix and at least 16 of its 43 characters (short
    # names that merely start with the prefix, such as the `stord_jobs` channel, stay readable).
    rf"|{re.escape(KEY_PREFIX)}[A-Za-z0-9_\-]{{16,}}"
)


def redact(text: str) -> str:
    """Return `text` with every bearer value and API key replaced by `[redacted]`."""
    if KEY_PREFIX not in text and "earer" not in text and "EARER" not in text:
        return text  # the common case: nothing to look for
    return _SECRET.sub(REDACTED, text)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "backslashreplace"))
    if isinstance(value, Mapping):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    if isinstance(value, BaseException):
        return redact(repr(value))
    return value


def redact_event(
    logger: structlog.typing.WrappedLogger, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Redact every value of a structlog event (a processor; runs after tracebacks are formatted)."""
    return {key: _redacted(value) for key, value in event.items()}


class RedactingFilter(logging.Filter):
    """Redact a standard-library record's message, arguments, traceback and stack before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string: keep what it meant to say, unformatted
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def configure_logging(*, log_format: str, level: str) -> None:
    """Route structlog, and the standard library's loggers of grpc and psycopg, to stdout, redacted."""
    numeric_level = logging.getLevelName(level.upper())
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_event,
    ]
    if log_format == "json":
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        logger_factory: structlog.typing.WrappedLogger = structlog.BytesLoggerFactory(sys.stdout.buffer)
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty()))
        logger_factory = structlog.PrintLoggerFactory(sys.stdout)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library; keep their warnings, formatted alike and redacted. The
    # filter sits on the handler, so it sees every record that propagates to the root, whatever its logger.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric_level, logging.WARNING))
    logging.captureWarnings(True)  # warnings.warn text goes through the handler above, not raw to stderr


class AccessLog:
    """Which finished RPCs get an `rpc` log line: failed and slow ones always, the rest as configured.

    `only_slow_and_failed` drops every successful call faster than `slow_seconds`; otherwise a `sample`
    fraction of them is logged (1.0: all). Streams are never slow by their length alone: pass
    `slow_seconds=math.inf` for them, since a tail or an ingest stream stays open as long as its client likes.
    """

    __slots__ = ("only_slow_and_failed", "sample", "slow_seconds")

    def __init__(
        self, *, only_slow_and_failed: bool = False, sample: float = 1.0, slow_seconds: float
    ) -> None:
        self.only_slow_and_failed = only_slow_and_failed
        self.sample = sample
        self.slow_seconds = slow_seconds

    def wants(self, ok: bool, seconds: float) -> bool:
        """Return whether to log a call that ended `ok` or not after `seconds`."""
        if not ok or seconds >= self.slow_seconds:
            return True
        if self.only_slow_and_failed:
            return False
        return self.sample >= 1.0 or random.random() < self.sample


ALL_CALLS = AccessLog(slow_seconds=math.inf)
"""Log every call (the default when no settings say otherwise)."""


def access_log_policies(settings: Settings) -> tuple[AccessLog, AccessLog]:
    """Return the access log policies of unary calls and of response streams, from the settings."""
    only = settings.access_log == "slow-and-failed"
    unary = AccessLog(
        only_slow_and_failed=only,
        sample=settings.access_log_sample,
        slow_seconds=settings.slow_call_ms / 1000,
    )
    stream = AccessLog(only_slow_and_failed=only, sample=settings.access_log_sample, slow_seconds=math.inf)
    return unary, stream

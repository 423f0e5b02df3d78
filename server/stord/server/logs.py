"""Structured logs: one JSON (or console) event per line on stdout."""

from __future__ import annotations

import logging
import math
import random
import sys
from typing import TYPE_CHECKING

import orjson
import structlog

if TYPE_CHECKING:
    from stord.server.config import Settings

__all__ = ["ALL_CALLS", "AccessLog", "access_log_policies", "configure_logging"]


def configure_logging(*, log_format: str, level: str) -> None:
    """Route structlog, and the standard library's loggers of grpc and psycopg, to stdout."""
    numeric_level = logging.getLevelName(level.upper())
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
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
    # Libraries log through the standard library; keep their warnings, formatted alike.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric_level, logging.WARNING))


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

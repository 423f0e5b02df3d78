"""Structured logs: one JSON (or console) event per line on stdout."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

__all__ = ["configure_logging"]


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

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg_pool

from stord.server.ports import InvalidArgument, ResourceExhausted, Unavailable

UNREACHABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed)
"""Failures of the connection or the server, not of the statement: the caller may retry."""

_LOST_CONNECTION_STATES = ("57P01", "57P02", "57P03")
"""SQLSTATEs of a server shutting down, crashing or starting up; class 08 is the connection's own."""


_INSUFFICIENT_RESOURCES = "53"
"""SQLSTATE class 53: disk full, out of memory, too many connections, a configured limit reached."""

_EXHAUSTED = {
    "53100": "is out of disk space",
    "53200": "is out of memory",
    "53300": "has too many connections",
    "53400": "reached a configured limit",
}


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn connection failures into Unavailable, and text PostgreSQL cannot store into InvalidArgument."""
    try:
        yield
    except UNREACHABLE as error:
        if (getattr(error, "sqlstate", None) or "").startswith(_INSUFFICIENT_RESOURCES):
            raise ResourceExhausted(f"the database (PostgreSQL) {_exhausted(error)}") from error
        raise Unavailable(_unavailable(error)) from error
    except psycopg.DataError as error:
        # psycopg refuses, before sending, a string with U+0000: PostgreSQL text cannot hold one.
        if "NUL" in str(error):
            raise InvalidArgument("key", "PostgreSQL cannot store the character U+0000") from error
        raise


def _exhausted(error: Exception) -> str:
    """Say which resource ran out, then PostgreSQL's own message (which names the file or the limit)."""
    state = getattr(error, "sqlstate", None) or ""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{_EXHAUSTED.get(state, 'lacks a resource')} (SQLSTATE {state}): {first_line}"


def _unavailable(error: Exception) -> str:
    """Say whether the server is out of reach or refused the statement for now (a deadlock, a lock wait)."""
    state = getattr(error, "sqlstate", None)
    if state is None or state.startswith("08") or state in _LOST_CONNECTION_STATES:
        return f"the database (PostgreSQL) is unreachable: {error}"
    return f"the database (PostgreSQL) cannot complete the statement now: {error}"

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg_pool

from stord.server.ports import InvalidArgument, Unavailable

UNREACHABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed)
"""Failures of the connection or the server, not of the statement: the caller may retry."""

_LOST_CONNECTION_STATES = ("57P01", "57P02", "57P03")
"""SQLSTATEs of a server shutting down, crashing or starting up; class 08 is the connection's own."""


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn connection failures into Unavailable, and text PostgreSQL cannot store into InvalidArgument."""
    try:
        yield
    except UNREACHABLE as error:
        raise Unavailable(_unavailable(error)) from error
    except psycopg.DataError as error:
        # psycopg refuses, before sending, a string with U+0000: PostgreSQL text cannot hold one.
        if "NUL" in str(error):
            raise InvalidArgument("key", "PostgreSQL cannot store the character U+0000") from error
        raise


def _unavailable(error: Exception) -> str:
    """Say whether the server is out of reach or refused the statement for now (a deadlock, a lock wait)."""
    state = getattr(error, "sqlstate", None)
    if state is None or state.startswith("08") or state in _LOST_CONNECTION_STATES:
        return f"the database (PostgreSQL) is unreachable: {error}"
    return f"the database (PostgreSQL) cannot complete the statement now: {error}"

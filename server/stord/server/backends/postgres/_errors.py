from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg_pool

from stord.server.ports import InvalidArgument, Unavailable

UNREACHABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed)
"""Failures of the connection or the server, not of the statement: the caller may retry."""


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn connection failures into Unavailable, and text PostgreSQL cannot store into InvalidArgument."""
    try:
        yield
    except UNREACHABLE as error:
        raise Unavailable(f"the database (PostgreSQL) is unreachable: {error}") from error
    except psycopg.DataError as error:
        # psycopg refuses, before sending, a string with U+0000: PostgreSQL text cannot hold one.
        if "NUL" in str(error):
            raise InvalidArgument("key", "PostgreSQL cannot store the character U+0000") from error
        raise

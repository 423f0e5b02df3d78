from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from stord.server.backends.postgres._errors import UNREACHABLE, translate_errors
from stord.server.backends.postgres._migrate import connect_timeout_seconds
from stord.server.config import PostgresOptions, redact_url
from stord.server.ports import Unavailable

Connection = AsyncConnection[TupleRow]


class Pool:
    """The connection pool every store of one backend shares; created and opened by `open`."""

    def __init__(self, url: str, options: PostgresOptions) -> None:
        self._url = url
        self._options = options
        self._pool: AsyncConnectionPool[Connection] | None = None

    async def open(self) -> None:
        """Open the pool and wait for its first connections; raise Unavailable when they do not come."""
        if self._pool is not None:
            return
        options = self._options
        # Connections run in autocommit: a single statement is its own transaction and the stores open
        # explicit transactions only where several statements must hold together.
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self._url,
            min_size=options.pool_min_size,
            max_size=max(options.pool_max_size, options.pool_min_size),
            open=False,
            timeout=options.connect_timeout,
            name="stord",
            kwargs={
                "autocommit": True,
                "connect_timeout": connect_timeout_seconds(options.connect_timeout),
                "application_name": "stord",
            },
        )
        try:
            await pool.open(wait=True, timeout=options.connect_timeout)
        except UNREACHABLE as error:
            await pool.close()
            where = redact_url(self._url)
            raise Unavailable(
                f"cannot reach PostgreSQL at {where} within {options.connect_timeout:g} s: {error}"
            ) from error
        self._pool = pool

    async def close(self) -> None:
        """Close every connection; safe to call more than once."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """Lend a connection, raising Unavailable when the pool is closed or the server unreachable."""
        with translate_errors():
            if self._pool is None:
                raise Unavailable(f"the PostgreSQL backend at {redact_url(self._url)} is not open")
            async with self._pool.connection() as connection:
                yield connection

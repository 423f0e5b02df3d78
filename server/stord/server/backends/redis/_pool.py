"""A connection pool that waits for a free connection at the cost of a semaphore."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["WaitingConnectionPool"]


class WaitingConnectionPool(ConnectionPool):
    """At most `max_connections`; a checkout beyond them waits up to `timeout` seconds for one to return.

    What redis-py's BlockingConnectionPool does, for less: it takes an asyncio.Condition and arms a timeout on
    every checkout and release, about 12 us of CPU per command on a GET of ~60 (measured, redis-py 8.1). Here
    an uncontended checkout costs one semaphore acquire, and only a waiting one arms a timeout.
    """

    def __init__(self, *, timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._slots = asyncio.Semaphore(self.max_connections)
        self._timeout = timeout

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise RedisConnectionError("No connection available.") from None
        else:
            await self._slots.acquire()  # returns at once: a slot is free
        try:
            connection: AbstractConnection = await super().get_connection()  # type: ignore[no-untyped-call]
        except BaseException:
            self._slots.release()
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        try:
            await super().release(connection)
        finally:
            self._slots.release()

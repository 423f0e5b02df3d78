"""The Redis backend's connection pool: at most max_connections, a checkout beyond them waits, then fails."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from stord.server.backends.redis._pool import WaitingConnectionPool
from tests.harness.redis import RedisServer


def test_a_checkout_beyond_the_limit_waits_for_a_release_or_fails_after_the_timeout(
    redis_server: RedisServer,
) -> None:
    async def run() -> None:
        pool = WaitingConnectionPool.from_url(redis_server.url, max_connections=2, timeout=0.3)
        try:
            first = await pool.get_connection()
            second = await pool.get_connection()
            with pytest.raises(RedisConnectionError, match="No connection available"):
                await pool.get_connection()  # both are out: fails after the timeout

            waiting = asyncio.create_task(pool.get_connection())
            await asyncio.sleep(0.05)
            assert not waiting.done()
            await pool.release(first)
            assert await asyncio.wait_for(waiting, 1) is first  # handed the one released
            await pool.release(first)
            await pool.release(second)
            third = await pool.get_connection()  # slots come back with releases
            await pool.release(third)
        finally:
            await pool.disconnect()

    asyncio.run(run())

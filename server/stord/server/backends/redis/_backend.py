from __future__ import annotations

from typing import ClassVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from stord.server.backends._contracts import DeclaredContracts
from stord.server.backends.redis._errors import unavailable_on_connection_errors
from stord.server.backends.redis._key_value import RedisKeyValueStore
from stord.server.backends.redis._transfer import RedisTransferStore
from stord.server.config import RedisOptions, redact_url
from stord.server.kv.port import Keyspace
from stord.server.ports import Capability, Unavailable


class RedisBackend(DeclaredContracts):
    """Serves the key-value contract of both roles from one Redis database; no schema, no migrations."""

    def __init__(self, url: str, *, options: RedisOptions) -> None:
        self._url = url
        self._options = options
        self._redis: Redis | None = None
        self._key_value = {keyspace: RedisKeyValueStore(self._client, keyspace) for keyspace in Keyspace}
        self._transfer = RedisTransferStore(self._client)

    CAPABILITIES: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.KEY_VALUE, Capability.TRANSFER, Capability.SHARED_BY_PROCESSES}
    )

    @property
    def kind(self) -> str:
        return "redis"

    def _client(self) -> Redis:
        if self._redis is None:
            raise Unavailable(f"the Redis backend at {redact_url(self._url)} is not open")
        return self._redis

    async def open(self) -> None:
        if self._redis is not None:
            return
        options = self._options
        # A blocking pool makes a burst of RPCs wait for a free connection instead of failing at
        # max_connections. No retries inside redis-py: resending RPUSH or SET NX after a lost reply could
        # append twice or report a write as refused; the caller gets UNAVAILABLE and decides.
        pool = BlockingConnectionPool.from_url(
            self._url,
            max_connections=options.max_connections,
            timeout=options.socket_timeout,
            socket_timeout=options.socket_timeout,
            socket_connect_timeout=options.socket_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        client = Redis.from_pool(pool)
        try:
            with unavailable_on_connection_errors():
                await client.ping()
        except Unavailable as error:
            await client.aclose(close_connection_pool=True)
            raise Unavailable(f"cannot reach Redis at {redact_url(self._url)}: {error.__cause__}") from error
        self._redis = client

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose(close_connection_pool=True)

    async def check(self) -> None:
        with unavailable_on_connection_errors():
            await self._client().ping()

    async def sweep(self) -> int:
        """Nothing to do: Redis expires keys itself."""
        return 0

"""The asyncio client: the twin of `_sync.py`, method for method (a test checks they match)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, TypeVar

import grpc

from stord.client import _codec
from stord.client._agents import AsyncAgents
from stord.client._alerts import AsyncAlerts
from stord.client._codec import TTL, Tls
from stord.client._documents import AsyncDocuments
from stord.client._events_async import AsyncEvents
from stord.client._jobs import AsyncJobs
from stord.client._manifests import AsyncManifests
from stord.client._retry import RetryPolicy
from stord.client.errors import StordError
from stord.v1 import admin_pb2, admin_pb2_grpc, kv_pb2, kv_pb2_grpc

__all__ = ["AsyncCache", "AsyncClient", "AsyncDatabase"]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class _Caller:
    """Invokes unary RPCs with the client's deadline and namespace, raising StordError on failure."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        timeout: float | None,
        namespace: str | None,
        principal: str | None = None,
        api_key: str | None = None,
        wait_for_ready: bool = False,
    ) -> None:
        self._channel = channel
        self.timeout = timeout
        self.metadata = _codec.metadata(namespace, principal, api_key)
        self.wait_for_ready = wait_for_ready
        """Whether calls wait for an unreachable daemon (up to their deadline) rather than fail at once."""

    async def __call__(
        self, method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response], request: _Request
    ) -> _Response:
        try:
            return await method(
                request, timeout=self.timeout, metadata=self.metadata, wait_for_ready=self.wait_for_ready
            )
        except grpc.RpcError as error:
            raise self.failure(error) from None

    def failure(self, error: grpc.RpcError) -> StordError:
        """Return the StordError of a failed call; a wait for a connection that ran out is Unavailable."""
        return _codec.call_failure(
            error,
            timeout=self.timeout,
            waited_for_ready=self.wait_for_ready,
            connected=lambda: self._channel.get_state(try_to_connect=False) is grpc.ChannelConnectivity.READY,
        )


class AsyncCache:
    """CacheService: values with optional expiry. Reached as `AsyncClient.cache`."""

    def __init__(self, channel: grpc.aio.Channel, call: _Caller) -> None:
        self._stub = kv_pb2_grpc.CacheServiceStub(channel)
        self._call = call

    async def get(self, key: str) -> bytes | None:
        """Return the value of `key`, None when it is missing or expired."""
        response = await self._call(self._stub.Get, kv_pb2.CacheServiceGetRequest(key=key))
        return response.value if response.found else None

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: TTL | None = None,
        if_absent: bool = False,
        if_present: bool = False,
    ) -> bool:
        """Write a value (expiring after `ttl`); return False when `if_absent`/`if_present` prevented it."""
        request = kv_pb2.CacheServiceSetRequest(
            key=key, value=value, ttl=_codec.duration(ttl), condition=_codec.condition(if_absent, if_present)
        )
        return (await self._call(self._stub.Set, request)).written

    async def delete(self, key: str) -> bool:
        """Remove `key`; return whether it had a value."""
        return (await self._call(self._stub.Delete, kv_pb2.CacheServiceDeleteRequest(key=key))).deleted

    async def get_many(self, keys: Iterable[str]) -> list[bytes | None]:
        """Return the value of each key, in order, None where missing."""
        response = await self._call(self._stub.MGet, kv_pb2.CacheServiceMGetRequest(keys=keys))
        return _codec.values(response.results)

    async def set_many(self, values: Mapping[str, bytes], *, ttl: TTL | None = None) -> None:
        """Write every value (all expiring after `ttl`), all or nothing."""
        expiry = _codec.duration(ttl)
        entries = [kv_pb2.CacheEntry(key=key, value=value, ttl=expiry) for key, value in values.items()]
        await self._call(self._stub.MSet, kv_pb2.CacheServiceMSetRequest(entries=entries))

    async def exists(self, key: str) -> bool:
        """Return whether `key` has a live value."""
        return (await self._call(self._stub.Exists, kv_pb2.CacheServiceExistsRequest(key=key))).exists

    async def clear(self) -> None:
        """Remove every key of this client's namespace."""
        await self._call(self._stub.Clear, kv_pb2.CacheServiceClearRequest())

    async def keys(self, pattern: str = "*", *, page_size: int = 0) -> AsyncIterator[str]:
        """Yield the keys matching a glob (`*`, `?`), in order, fetching pages as needed."""
        token = ""
        while True:
            request = kv_pb2.CacheServiceKeysRequest(pattern=pattern, page_size=page_size, page_token=token)
            response = await self._call(self._stub.Keys, request)
            for key in response.keys:
                yield key
            token = response.next_page_token
            if not token:
                return

    async def get_json(self, key: str) -> Any:
        """Return the JSON value of `key`, None when missing."""
        return _codec.load_json(await self.get(key))

    async def set_json(self, key: str, document: Any, *, ttl: TTL | None = None) -> None:
        """Write a JSON value."""
        await self.set(key, _codec.dump_json(document), ttl=ttl)


class AsyncDatabase:
    """DatabaseService: durable values and append-only lists. Reached as `AsyncClient.db`."""

    def __init__(self, channel: grpc.aio.Channel, call: _Caller) -> None:
        self._stub = kv_pb2_grpc.DatabaseServiceStub(channel)
        self._call = call

    async def get(self, key: str) -> bytes | None:
        """Return the value of `key`, None when it has none."""
        response = await self._call(self._stub.Get, kv_pb2.DatabaseServiceGetRequest(key=key))
        return response.value if response.found else None

    async def set(self, key: str, value: bytes, *, if_absent: bool = False, if_present: bool = False) -> bool:
        """Write a value; return False when `if_absent`/`if_present` prevented it."""
        request = kv_pb2.DatabaseServiceSetRequest(
            key=key, value=value, condition=_codec.condition(if_absent, if_present)
        )
        return (await self._call(self._stub.Set, request)).written

    async def delete(self, key: str) -> bool:
        """Remove the value and list of `key`; return whether either existed."""
        return (await self._call(self._stub.Delete, kv_pb2.DatabaseServiceDeleteRequest(key=key))).deleted

    async def get_many(self, keys: Iterable[str]) -> list[bytes | None]:
        """Return the value of each key, in order, None where missing."""
        response = await self._call(self._stub.MGet, kv_pb2.DatabaseServiceMGetRequest(keys=keys))
        return _codec.values(response.results)

    async def set_many(self, values: Mapping[str, bytes]) -> None:
        """Write every value, all or nothing."""
        entries = [kv_pb2.KeyValue(key=key, value=value) for key, value in values.items()]
        await self._call(self._stub.MSet, kv_pb2.DatabaseServiceMSetRequest(entries=entries))

    async def exists(self, key: str) -> bool:
        """Return whether `key` has a value or a non-empty list."""
        return (await self._call(self._stub.Exists, kv_pb2.DatabaseServiceExistsRequest(key=key))).exists

    async def clear(self) -> None:
        """Remove every value and list of this client's namespace."""
        await self._call(self._stub.Clear, kv_pb2.DatabaseServiceClearRequest())

    async def keys(self, pattern: str = "*", *, page_size: int = 0) -> AsyncIterator[str]:
        """Yield the keys matching a glob (`*`, `?`), in order, fetching pages as needed."""
        token = ""
        while True:
            request = kv_pb2.DatabaseServiceKeysRequest(
                pattern=pattern, page_size=page_size, page_token=token
            )
            response = await self._call(self._stub.Keys, request)
            for key in response.keys:
                yield key
            token = response.next_page_token
            if not token:
                return

    async def append(self, key: str, value: bytes) -> int:
        """Add an item at the end of the list of `key`; return the new length."""
        return (
            await self._call(self._stub.Append, kv_pb2.DatabaseServiceAppendRequest(key=key, value=value))
        ).length

    async def get_range(self, key: str, start: int = 0, count: int = 0) -> list[bytes]:
        """Return up to `count` items (0: up to 1000) from position `start` (negative: from the end)."""
        request = kv_pb2.DatabaseServiceGetRangeRequest(key=key, start=start, count=count)
        return list((await self._call(self._stub.GetRange, request)).values)

    async def length(self, key: str) -> int:
        """Return the number of items in the list of `key`."""
        return (
            await self._call(self._stub.GetLength, kv_pb2.DatabaseServiceGetLengthRequest(key=key))
        ).length

    async def get_json(self, key: str) -> Any:
        """Return the JSON value of `key`, None when missing."""
        return _codec.load_json(await self.get(key))

    async def set_json(self, key: str, document: Any) -> None:
        """Write a JSON value."""
        await self.set(key, _codec.dump_json(document))


class AsyncClient:
    """An asyncio connection to stord: `client.cache`, `client.db`, `client.get_info()`.

    `target` is `host:port` or `unix:/path/to.sock`. Every call gets `timeout` seconds (None: no deadline)
    and runs in `namespace` (None: the daemon's `default`), as `principal` (None: anonymous), which owns
    the agents the client writes.

    With a daemon that requires API keys, pass `api_key`: the key decides the namespace and principal, so
    leave those unset. `tls` encrypts the connection: True trusts the system's roots, a `Tls` names the
    daemon's CA and, for mTLS, the client's certificate.

    `retry` retries idempotent calls that failed with UNAVAILABLE, within their deadline, and lets calls
    wait for a daemon that is restarting (see `RetryPolicy`); None turns both off, so every call fails at
    once when the daemon cannot be reached.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        namespace: str | None = None,
        principal: str | None = None,
        api_key: str | None = None,
        tls: Tls | bool = False,
        timeout: float | None = _codec.DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = _codec.DEFAULT_RETRY,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self._channel = _codec.aio_channel(target, tls, options, retry)
        call = _Caller(
            self._channel, timeout, namespace, principal, api_key, _codec.waits_for_ready(retry, timeout)
        )
        self.cache = AsyncCache(self._channel, call)
        self.db = AsyncDatabase(self._channel, call)
        self.events = AsyncEvents(self._channel, call)
        self.alerts = AsyncAlerts(self._channel, call)
        self.agents = AsyncAgents(self._channel, call)
        self.manifests = AsyncManifests(self._channel, call)
        self.documents = AsyncDocuments(self._channel, call)
        self.jobs = AsyncJobs(self._channel, call)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self._call = call

    async def get_info(self) -> admin_pb2.GetInfoResponse:
        """Return the daemon's version, backends, fallbacks and uptime."""
        return await self._call(self._admin.GetInfo, admin_pb2.GetInfoRequest())

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

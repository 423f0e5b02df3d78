"""CacheService and DatabaseService for both clients: `Cache`, `Database` and their twins `AsyncCache`,
`AsyncDatabase` (reached as `client.cache` and `client.db`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import grpc

from stord.client import _codec
from stord.client._codec import TTL
from stord.v1 import kv_pb2, kv_pb2_grpc

if TYPE_CHECKING:
    from stord.client import _async, _sync

__all__ = ["AsyncCache", "AsyncDatabase", "Cache", "Database"]


class Cache:
    """CacheService: values with optional expiry. Reached as `Client.cache`."""

    def __init__(self, channel: grpc.Channel, call: _sync._Caller) -> None:
        self._stub = kv_pb2_grpc.CacheServiceStub(channel)
        self._call = call

    def get(self, key: str) -> bytes | None:
        """Return the value of `key`, None when it is missing or expired."""
        response = self._call(self._stub.Get, kv_pb2.CacheServiceGetRequest(key=key))
        return response.value if response.found else None

    def set(
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
        return self._call(self._stub.Set, request).written

    def delete(self, key: str) -> bool:
        """Remove `key`; return whether it had a value."""
        return self._call(self._stub.Delete, kv_pb2.CacheServiceDeleteRequest(key=key)).deleted

    def get_many(self, keys: Iterable[str]) -> list[bytes | None]:
        """Return the value of each key, in order, None where missing."""
        response = self._call(self._stub.MGet, kv_pb2.CacheServiceMGetRequest(keys=keys))
        return _codec.values(response.results)

    def set_many(self, values: Mapping[str, bytes], *, ttl: TTL | None = None) -> None:
        """Write every value (all expiring after `ttl`), all or nothing."""
        expiry = _codec.duration(ttl)
        entries = [kv_pb2.CacheEntry(key=key, value=value, ttl=expiry) for key, value in values.items()]
        self._call(self._stub.MSet, kv_pb2.CacheServiceMSetRequest(entries=entries))

    def exists(self, key: str) -> bool:
        """Return whether `key` has a live value."""
        return self._call(self._stub.Exists, kv_pb2.CacheServiceExistsRequest(key=key)).exists

    def clear(self) -> None:
        """Remove every key of this client's namespace."""
        self._call(self._stub.Clear, kv_pb2.CacheServiceClearRequest())

    def keys(self, pattern: str = "*", *, page_size: int = 0) -> Iterator[str]:
        """Yield the keys matching a glob (`*`, `?`), in order, fetching pages as needed."""
        token = ""
        while True:
            request = kv_pb2.CacheServiceKeysRequest(pattern=pattern, page_size=page_size, page_token=token)
            response = self._call(self._stub.Keys, request)
            yield from response.keys
            token = response.next_page_token
            if not token:
                return

    def get_json(self, key: str) -> Any:
        """Return the JSON value of `key`, None when missing."""
        return _codec.load_json(self.get(key))

    def set_json(self, key: str, document: Any, *, ttl: TTL | None = None) -> None:
        """Write a JSON value."""
        self.set(key, _codec.dump_json(document), ttl=ttl)


class Database:
    """DatabaseService: durable values and append-only lists. Reached as `Client.db`."""

    def __init__(self, channel: grpc.Channel, call: _sync._Caller) -> None:
        self._stub = kv_pb2_grpc.DatabaseServiceStub(channel)
        self._call = call

    def get(self, key: str) -> bytes | None:
        """Return the value of `key`, None when it has none."""
        response = self._call(self._stub.Get, kv_pb2.DatabaseServiceGetRequest(key=key))
        return response.value if response.found else None

    def set(self, key: str, value: bytes, *, if_absent: bool = False, if_present: bool = False) -> bool:
        """Write a value; return False when `if_absent`/`if_present` prevented it."""
        request = kv_pb2.DatabaseServiceSetRequest(
            key=key, value=value, condition=_codec.condition(if_absent, if_present)
        )
        return self._call(self._stub.Set, request).written

    def delete(self, key: str) -> bool:
        """Remove the value and list of `key`; return whether either existed."""
        return self._call(self._stub.Delete, kv_pb2.DatabaseServiceDeleteRequest(key=key)).deleted

    def get_many(self, keys: Iterable[str]) -> list[bytes | None]:
        """Return the value of each key, in order, None where missing."""
        response = self._call(self._stub.MGet, kv_pb2.DatabaseServiceMGetRequest(keys=keys))
        return _codec.values(response.results)

    def set_many(self, values: Mapping[str, bytes]) -> None:
        """Write every value, all or nothing."""
        entries = [kv_pb2.KeyValue(key=key, value=value) for key, value in values.items()]
        self._call(self._stub.MSet, kv_pb2.DatabaseServiceMSetRequest(entries=entries))

    def exists(self, key: str) -> bool:
        """Return whether `key` has a value or a non-empty list."""
        return self._call(self._stub.Exists, kv_pb2.DatabaseServiceExistsRequest(key=key)).exists

    def clear(self) -> None:
        """Remove every value and list of this client's namespace."""
        self._call(self._stub.Clear, kv_pb2.DatabaseServiceClearRequest())

    def keys(self, pattern: str = "*", *, page_size: int = 0) -> Iterator[str]:
        """Yield the keys matching a glob (`*`, `?`), in order, fetching pages as needed."""
        token = ""
        while True:
            request = kv_pb2.DatabaseServiceKeysRequest(
                pattern=pattern, page_size=page_size, page_token=token
            )
            response = self._call(self._stub.Keys, request)
            yield from response.keys
            token = response.next_page_token
            if not token:
                return

    def append(self, key: str, value: bytes) -> int:
        """Add an item at the end of the list of `key`; return the new length."""
        return self._call(self._stub.Append, kv_pb2.DatabaseServiceAppendRequest(key=key, value=value)).length

    def get_range(self, key: str, start: int = 0, count: int = 0) -> list[bytes]:
        """Return up to `count` items (0: up to 1000) from position `start` (negative: from the end)."""
        request = kv_pb2.DatabaseServiceGetRangeRequest(key=key, start=start, count=count)
        return list(self._call(self._stub.GetRange, request).values)

    def length(self, key: str) -> int:
        """Return the number of items in the list of `key`."""
        return self._call(self._stub.GetLength, kv_pb2.DatabaseServiceGetLengthRequest(key=key)).length

    def get_json(self, key: str) -> Any:
        """Return the JSON value of `key`, None when missing."""
        return _codec.load_json(self.get(key))

    def set_json(self, key: str, document: Any) -> None:
        """Write a JSON value."""
        self.set(key, _codec.dump_json(document))


class AsyncCache:
    """CacheService: values with optional expiry. Reached as `AsyncClient.cache`."""

    def __init__(self, channel: grpc.aio.Channel, call: _async._Caller) -> None:
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

    def __init__(self, channel: grpc.aio.Channel, call: _async._Caller) -> None:
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

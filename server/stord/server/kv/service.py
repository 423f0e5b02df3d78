"""CacheService and DatabaseService (DESIGN 4.1) over the KeyValueStore port."""

from __future__ import annotations

from typing import Any

import grpc

from stord.server.kv.port import KeyValueStore, SetCondition, ValueEntry
from stord.server.ports import InvalidArgument
from stord.server.rpc import calls
from stord.server.rpc import validate as check
from stord.server.rpc.page_tokens import PageTokens
from stord.v1 import kv_pb2 as pb
from stord.v1 import kv_pb2_grpc

__all__ = ["CacheServicer", "DatabaseServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

MAX_RANGE_COUNT = 1000

_CONDITIONS = {
    pb.SET_CONDITION_IF_ABSENT: SetCondition.IF_ABSENT,
    pb.SET_CONDITION_IF_PRESENT: SetCondition.IF_PRESENT,
}


def _condition(request: pb.CacheServiceSetRequest | pb.DatabaseServiceSetRequest) -> SetCondition:
    if not request.HasField("condition"):
        return SetCondition.ALWAYS
    condition = _CONDITIONS.get(request.condition)
    if condition is None:
        raise InvalidArgument("condition", "must be SET_CONDITION_IF_ABSENT or SET_CONDITION_IF_PRESENT")
    return condition


async def _lookups(store: KeyValueStore, keys: list[str]) -> list[pb.KeyLookup]:
    for index, key in enumerate(check.batch(keys, "keys")):
        check.key(key, f"keys[{index}]")
    values = await store.get_many(calls.namespace(), keys)
    return [
        pb.KeyLookup(key=key) if data is None else pb.KeyLookup(key=key, found=True, value=data)
        for key, data in zip(keys, values, strict=True)
    ]


async def _keys_page(
    store: KeyValueStore,
    tokens: PageTokens,
    request: pb.CacheServiceKeysRequest | pb.DatabaseServiceKeysRequest,
) -> tuple[list[str], str]:
    glob, limit = check.pattern(request.pattern), check.page_size(request.page_size)
    position = tokens.resume(request, calls.namespace(), str)
    after = None if position is None else str(position[0])
    # One extra key tells whether another page follows, so the last page never returns an empty successor.
    keys = await store.keys(calls.namespace(), glob, after=after, limit=limit + 1)
    if len(keys) > limit:
        return keys[:limit], tokens.issue(request, calls.namespace(), keys[limit - 1])
    return keys, ""


class CacheServicer(kv_pb2_grpc.CacheServiceServicer):
    """The cache role: values with optional expiry."""

    def __init__(self, store: KeyValueStore, tokens: PageTokens) -> None:
        self._store = store
        self._tokens = tokens

    async def Get(self, request: pb.CacheServiceGetRequest, context: Context) -> pb.CacheServiceGetResponse:
        data = await self._store.get(calls.namespace(), check.key(request.key))
        if data is None:
            return pb.CacheServiceGetResponse()
        return pb.CacheServiceGetResponse(found=True, value=data)

    async def Set(self, request: pb.CacheServiceSetRequest, context: Context) -> pb.CacheServiceSetResponse:
        ttl = check.ttl(request.ttl, request.HasField("ttl"))
        entry = ValueEntry(check.key(request.key), check.value(request.value), ttl)
        written = await self._store.set(calls.namespace(), entry, condition=_condition(request))
        return pb.CacheServiceSetResponse(written=written)

    async def Delete(
        self, request: pb.CacheServiceDeleteRequest, context: Context
    ) -> pb.CacheServiceDeleteResponse:
        deleted = await self._store.delete(calls.namespace(), check.key(request.key))
        return pb.CacheServiceDeleteResponse(deleted=deleted)

    async def MGet(
        self, request: pb.CacheServiceMGetRequest, context: Context
    ) -> pb.CacheServiceMGetResponse:
        return pb.CacheServiceMGetResponse(results=await _lookups(self._store, list(request.keys)))

    async def MSet(
        self, request: pb.CacheServiceMSetRequest, context: Context
    ) -> pb.CacheServiceMSetResponse:
        entries = [
            ValueEntry(
                check.key(entry.key, f"entries[{index}].key"),
                check.value(entry.value, f"entries[{index}].value"),
                check.ttl(entry.ttl, entry.HasField("ttl"), f"entries[{index}].ttl"),
            )
            for index, entry in enumerate(check.batch(request.entries, "entries"))
        ]
        await self._store.set_many(calls.namespace(), entries)
        return pb.CacheServiceMSetResponse()

    async def Exists(
        self, request: pb.CacheServiceExistsRequest, context: Context
    ) -> pb.CacheServiceExistsResponse:
        exists = await self._store.exists(calls.namespace(), check.key(request.key))
        return pb.CacheServiceExistsResponse(exists=exists)

    async def Clear(
        self, request: pb.CacheServiceClearRequest, context: Context
    ) -> pb.CacheServiceClearResponse:
        await self._store.clear(calls.namespace())
        return pb.CacheServiceClearResponse()

    async def Keys(
        self, request: pb.CacheServiceKeysRequest, context: Context
    ) -> pb.CacheServiceKeysResponse:
        keys, token = await _keys_page(self._store, self._tokens, request)
        return pb.CacheServiceKeysResponse(keys=keys, next_page_token=token)


class DatabaseServicer(kv_pb2_grpc.DatabaseServiceServicer):
    """The database role: durable values and append-only lists."""

    def __init__(self, store: KeyValueStore, tokens: PageTokens) -> None:
        self._store = store
        self._tokens = tokens

    async def Get(
        self, request: pb.DatabaseServiceGetRequest, context: Context
    ) -> pb.DatabaseServiceGetResponse:
        data = await self._store.get(calls.namespace(), check.key(request.key))
        if data is None:
            return pb.DatabaseServiceGetResponse()
        return pb.DatabaseServiceGetResponse(found=True, value=data)

    async def Set(
        self, request: pb.DatabaseServiceSetRequest, context: Context
    ) -> pb.DatabaseServiceSetResponse:
        entry = ValueEntry(check.key(request.key), check.value(request.value))
        written = await self._store.set(calls.namespace(), entry, condition=_condition(request))
        return pb.DatabaseServiceSetResponse(written=written)

    async def Delete(
        self, request: pb.DatabaseServiceDeleteRequest, context: Context
    ) -> pb.DatabaseServiceDeleteResponse:
        deleted = await self._store.delete(calls.namespace(), check.key(request.key))
        return pb.DatabaseServiceDeleteResponse(deleted=deleted)

    async def MGet(
        self, request: pb.DatabaseServiceMGetRequest, context: Context
    ) -> pb.DatabaseServiceMGetResponse:
        return pb.DatabaseServiceMGetResponse(results=await _lookups(self._store, list(request.keys)))

    async def MSet(
        self, request: pb.DatabaseServiceMSetRequest, context: Context
    ) -> pb.DatabaseServiceMSetResponse:
        entries = [
            ValueEntry(
                check.key(entry.key, f"entries[{index}].key"),
                check.value(entry.value, f"entries[{index}].value"),
            )
            for index, entry in enumerate(check.batch(request.entries, "entries"))
        ]
        await self._store.set_many(calls.namespace(), entries)
        return pb.DatabaseServiceMSetResponse()

    async def Exists(
        self, request: pb.DatabaseServiceExistsRequest, context: Context
    ) -> pb.DatabaseServiceExistsResponse:
        exists = await self._store.exists(calls.namespace(), check.key(request.key))
        return pb.DatabaseServiceExistsResponse(exists=exists)

    async def Clear(
        self, request: pb.DatabaseServiceClearRequest, context: Context
    ) -> pb.DatabaseServiceClearResponse:
        await self._store.clear(calls.namespace())
        return pb.DatabaseServiceClearResponse()

    async def Keys(
        self, request: pb.DatabaseServiceKeysRequest, context: Context
    ) -> pb.DatabaseServiceKeysResponse:
        keys, token = await _keys_page(self._store, self._tokens, request)
        return pb.DatabaseServiceKeysResponse(keys=keys, next_page_token=token)

    async def Append(
        self, request: pb.DatabaseServiceAppendRequest, context: Context
    ) -> pb.DatabaseServiceAppendResponse:
        length = await self._store.append(
            calls.namespace(), check.key(request.key), check.value(request.value)
        )
        return pb.DatabaseServiceAppendResponse(length=length)

    async def GetRange(
        self, request: pb.DatabaseServiceGetRangeRequest, context: Context
    ) -> pb.DatabaseServiceGetRangeResponse:
        if request.count < 0 or request.count > MAX_RANGE_COUNT:
            raise InvalidArgument("count", f"must be between 0 and {MAX_RANGE_COUNT}")
        values = await self._store.get_range(
            calls.namespace(), check.key(request.key), request.start, request.count or MAX_RANGE_COUNT
        )
        return pb.DatabaseServiceGetRangeResponse(values=values)

    async def GetLength(
        self, request: pb.DatabaseServiceGetLengthRequest, context: Context
    ) -> pb.DatabaseServiceGetLengthResponse:
        length = await self._store.length(calls.namespace(), check.key(request.key))
        return pb.DatabaseServiceGetLengthResponse(length=length)

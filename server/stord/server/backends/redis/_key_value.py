from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence

from redis.asyncio import Redis

from stord.server.backends.redis import _layout
from stord.server.backends.redis._errors import translate_errors
from stord.server.kv.glob import glob_regex, literal_prefix
from stord.server.kv.port import Keyspace, SetCondition, ValueEntry

_SCAN_COUNT = 1000
_UNLINK_BATCH = 500
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _milliseconds(ttl: float | None) -> int | None:
    """Return `ttl` in whole milliseconds for PX, rounded up so a positive ttl never becomes 0 (no expiry)."""
    if ttl is None:
        return None
    # round() first so that float noise (1.1 * 1000 == 1100.0000000000002) does not add a millisecond.
    return max(1, math.ceil(round(ttl * 1000, 6)))


def _as_bytes(reply: bytes | str | None) -> bytes | None:
    # The client runs with decode_responses=False, so replies are bytes; a str would be a wiring bug.
    if reply is None or isinstance(reply, bytes):
        return reply
    raise TypeError(f"expected bytes from Redis, got {type(reply).__name__}")


def _range_bounds(start: int, count: int) -> tuple[int, int] | None:
    """Return LRANGE indices selecting positions [p, p + count) of the contract, or None when none can exist.

    With start >= 0 the window is [start, start + count - 1]. With start < 0 both ends are given as negative
    indices, which Redis resolves against the length itself, in the same round trip: it turns the first into
    len + start and clamps it to 0, which keeps exactly the positions of the window that exist (those before 0
    do not); it turns the last into len + start + count - 1, and when that is below 0 the window ends before
    the list starts and LRANGE returns nothing (5 items, start -10, count 3 -> LRANGE -10 -8 -> nothing).
    A last position at or past the end of the list (start + count - 1 >= 0) is written -1, the newest item.
    """
    if count <= 0:
        return None  # LRANGE 0 -1 would read the whole list
    last = start + count - 1
    if start >= 0:
        if start > _INT64_MAX:
            return None
        return start, min(last, _INT64_MAX)
    if last >= 0:
        return max(start, _INT64_MIN), -1
    if last < _INT64_MIN:
        return None
    return max(start, _INT64_MIN), last


class RedisKeyValueStore:
    """One role's key-value store: values as Redis strings with native expiry, lists as Redis lists."""

    def __init__(self, client: Callable[[], Redis], keyspace: Keyspace) -> None:
        self._client = client
        self._keyspace = keyspace

    def _prefix(self, namespace: str) -> str:
        return _layout.namespace_prefix(self._keyspace, namespace)

    @translate_errors
    async def get(self, namespace: str, key: str) -> bytes | None:
        reply = await self._client().get(_layout.value_key(self._prefix(namespace), key))
        return _as_bytes(reply)

    @translate_errors
    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        prefix = self._prefix(namespace)
        replies = await self._client().mget([_layout.value_key(prefix, key) for key in keys])
        return [_as_bytes(reply) for reply in replies]

    @translate_errors
    async def set(self, namespace: str, entry: ValueEntry, *, condition: SetCondition) -> bool:
        key, value, ttl = entry.key, entry.value, entry.ttl
        # SET without KEEPTTL replaces any earlier expiry, as the contract asks.
        written = await self._client().set(
            _layout.value_key(self._prefix(namespace), key),
            value,
            px=_milliseconds(ttl),
            nx=condition is SetCondition.IF_ABSENT,
            xx=condition is SetCondition.IF_PRESENT,
        )
        return bool(written)

    @translate_errors
    async def set_many(self, namespace: str, entries: Sequence[ValueEntry]) -> None:
        latest = {entry.key: entry for entry in entries}
        if not latest:
            return
        prefix = self._prefix(namespace)
        async with self._client().pipeline(transaction=True) as pipe:
            for entry in latest.values():
                pipe.set(_layout.value_key(prefix, entry.key), entry.value, px=_milliseconds(entry.ttl))
            await pipe.execute()

    @translate_errors
    async def delete(self, namespace: str, key: str) -> bool:
        prefix = self._prefix(namespace)
        removed = await self._client().delete(_layout.value_key(prefix, key), _layout.list_key(prefix, key))
        return removed > 0

    @translate_errors
    async def exists(self, namespace: str, key: str) -> bool:
        # Redis deletes a list when its last item goes, so an existing list key is a non-empty list.
        prefix = self._prefix(namespace)
        found = await self._client().exists(_layout.value_key(prefix, key), _layout.list_key(prefix, key))
        return found > 0

    @translate_errors
    async def clear(self, namespace: str) -> None:
        client = self._client()
        batch: list[bytes | str] = []
        async for name in client.scan_iter(
            match=_layout.whole_namespace_match(self._prefix(namespace)), count=_SCAN_COUNT
        ):
            batch.append(name)
            if len(batch) >= _UNLINK_BATCH:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)

    @translate_errors
    async def keys(self, namespace: str, pattern: str, *, after: str | None, limit: int) -> list[str]:
        # Like Redis KEYS, this costs O(keys in the namespace sharing the pattern's literal prefix) per page:
        # SCAN has no order, so every candidate is visited to find the `limit` smallest after `after`.
        # SCAN MATCH only narrows by the literal prefix; the user's pattern is matched here, in Python,
        # because Redis's `?` matches one byte rather than one character and Redis gives `[` and `\` meaning.
        prefix = self._prefix(namespace)
        strip = len(prefix.encode()) + len(_layout.VALUE_KIND) + 1
        regex = glob_regex(pattern)
        found: set[str] = set()
        async for name in self._client().scan_iter(
            match=_layout.both_kinds_match(prefix, literal_prefix(pattern)), count=_SCAN_COUNT
        ):
            raw = name if isinstance(name, bytes) else name.encode()
            key = raw[strip:].decode()
            if (after is None or key > after) and regex.fullmatch(key):
                found.add(key)
        # Python orders str by code point, which is the UTF-8 byte order the contract asks for.
        return heapq.nsmallest(limit, found)

    @translate_errors
    async def append(self, namespace: str, key: str, value: bytes) -> int:
        return await self._client().rpush(_layout.list_key(self._prefix(namespace), key), value)

    @translate_errors
    async def get_range(self, namespace: str, key: str, start: int, count: int) -> list[bytes]:
        bounds = _range_bounds(start, count)
        if bounds is None:
            return []
        items = await self._client().lrange(_layout.list_key(self._prefix(namespace), key), *bounds)
        return [item for item in map(_as_bytes, items) if item is not None]

    @translate_errors
    async def length(self, namespace: str, key: str) -> int:
        return await self._client().llen(_layout.list_key(self._prefix(namespace), key))

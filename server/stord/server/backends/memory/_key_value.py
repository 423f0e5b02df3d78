from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from stord.server.kv.glob import glob_regex, literal_prefix
from stord.server.kv.port import SetCondition, ValueEntry
from stord.server.ports import Clock

# Every method runs to completion without awaiting, so each is atomic on the event loop and needs no lock.


@dataclass(slots=True)
class _Value:
    data: bytes
    expires_at: float | None


@dataclass(slots=True)
class _Namespace:
    values: dict[str, _Value] = field(default_factory=dict)
    lists: dict[str, list[bytes]] = field(default_factory=dict)


def _expired(value: _Value, now: float) -> bool:
    return value.expires_at is not None and value.expires_at <= now


_EMPTY = _Namespace()
"""What reads see of a namespace that holds nothing; never written to."""


class MemoryKeyValueStore:
    """Values and lists in dicts; expired values are dropped when next touched."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._namespaces: dict[str, _Namespace] = {}

    def _space(self, namespace: str) -> _Namespace:
        """Return the namespace to write into, creating it."""
        space = self._namespaces.get(namespace)
        if space is None:
            space = self._namespaces[namespace] = _Namespace()
        return space

    def _view(self, namespace: str) -> _Namespace:
        """Return the namespace to read without creating it: reads must not grow memory."""
        return self._namespaces.get(namespace) or _EMPTY

    def delete_expired(self) -> int:
        """Drop every expired value and return how many: values nobody reads again would stay forever."""
        now, dropped = self._clock(), 0
        for name, space in list(self._namespaces.items()):
            expired = [key for key, value in space.values.items() if _expired(value, now)]
            for key in expired:
                del space.values[key]
            dropped += len(expired)
            if not space.values and not space.lists:
                del self._namespaces[name]
        return dropped

    def _live(self, space: _Namespace, key: str, now: float) -> _Value | None:
        value = space.values.get(key)
        if value is not None and _expired(value, now):
            del space.values[key]
            return None
        return value

    def _expiry(self, ttl: float | None, now: float) -> float | None:
        return None if ttl is None else now + ttl

    async def get(self, namespace: str, key: str) -> bytes | None:
        value = self._live(self._view(namespace), key, self._clock())
        return None if value is None else value.data

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        space, now = self._view(namespace), self._clock()
        results: list[bytes | None] = []
        for key in keys:
            value = self._live(space, key, now)
            results.append(None if value is None else value.data)
        return results

    async def set(self, namespace: str, entry: ValueEntry, *, condition: SetCondition) -> bool:
        key, value, ttl = entry.key, entry.value, entry.ttl
        space, now = self._space(namespace), self._clock()
        if condition is not SetCondition.ALWAYS:
            present = self._live(space, key, now) is not None
            if present != (condition is SetCondition.IF_PRESENT):
                return False
        space.values[key] = _Value(value, self._expiry(ttl, now))
        return True

    async def set_many(self, namespace: str, entries: Sequence[ValueEntry]) -> None:
        space, now = self._space(namespace), self._clock()
        for entry in entries:
            space.values[entry.key] = _Value(entry.value, self._expiry(entry.ttl, now))

    async def delete(self, namespace: str, key: str) -> bool:
        space = self._view(namespace)
        had_value = self._live(space, key, self._clock()) is not None
        space.values.pop(key, None)
        had_list = space.lists.pop(key, None) is not None
        return had_value or had_list

    async def exists(self, namespace: str, key: str) -> bool:
        space = self._view(namespace)
        return self._live(space, key, self._clock()) is not None or key in space.lists

    async def clear(self, namespace: str) -> None:
        self._namespaces.pop(namespace, None)

    async def keys(self, namespace: str, pattern: str, *, after: str | None, limit: int) -> list[str]:
        space, now = self._view(namespace), self._clock()
        regex, prefix = glob_regex(pattern), literal_prefix(pattern)
        candidates = sorted(set(space.values) | set(space.lists))
        start = bisect.bisect_right(candidates, after) if after is not None else 0
        start = max(start, bisect.bisect_left(candidates, prefix))
        found: list[str] = []
        for key in candidates[start:]:
            if not key.startswith(prefix):
                break
            if regex.fullmatch(key) and (key in space.lists or self._live(space, key, now) is not None):
                found.append(key)
                if len(found) == limit:
                    break
        return found

    async def append(self, namespace: str, key: str, value: bytes) -> int:
        items = self._space(namespace).lists.setdefault(key, [])
        items.append(value)
        return len(items)

    async def get_range(self, namespace: str, key: str, start: int, count: int) -> list[bytes]:
        items = self._view(namespace).lists.get(key, [])
        first = start if start >= 0 else len(items) + start
        return items[max(first, 0) : max(first + count, 0)]

    async def length(self, namespace: str, key: str) -> int:
        return len(self._view(namespace).lists.get(key, []))

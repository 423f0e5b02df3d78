"""The key-value contract (DESIGN 4.1): values with optional expiry and append-only lists."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Keyspace(enum.Enum):
    """Which role's keys a key-value store holds: the two roles never see each other's keys."""

    CACHE = "cache"
    DATABASE = "database"


class SetCondition(enum.Enum):
    """When a conditional set writes."""

    ALWAYS = "always"
    IF_ABSENT = "if_absent"
    IF_PRESENT = "if_present"


@dataclass(frozen=True, slots=True)
class ValueEntry:
    """One value to write; `ttl` in seconds, None for no expiry."""

    key: str
    value: bytes
    ttl: float | None = None


class KeyValueStore(Protocol):
    """Namespaced values with optional expiry, and per key an append-only list (DESIGN 4.1).

    Arguments arrive validated: keys are non-empty, `ttl` is positive or None, `limit` and `count` are
    positive. An expired value is invisible to every method, as if deleted.
    """

    async def get(self, namespace: str, key: str) -> bytes | None:
        """Return the live value of `key`, or None."""
        ...

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        """Return the live value of each key, in order, None where there is none."""
        ...

    async def set(self, namespace: str, entry: ValueEntry, *, condition: SetCondition) -> bool:
        """Write a value, replacing any earlier value and expiry; False when `condition` prevented it."""
        ...

    async def set_many(self, namespace: str, entries: Sequence[ValueEntry]) -> None:
        """Write every entry or none; a key given twice takes its last entry."""
        ...

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove the key's value and list; return whether either existed."""
        ...

    async def exists(self, namespace: str, key: str) -> bool:
        """Return whether the key has a live value or a non-empty list."""
        ...

    async def clear(self, namespace: str) -> None:
        """Remove every value and list of the namespace."""
        ...

    async def keys(self, namespace: str, pattern: str, *, after: str | None, limit: int) -> list[str]:
        """Return up to `limit` keys matching the glob `pattern` and greater than `after`, ascending.

        Keys order by their UTF-8 bytes (code point order). In `pattern`, `*` matches any run of characters,
        `?` exactly one, and every other character itself.
        """
        ...

    async def append(self, namespace: str, key: str, value: bytes) -> int:
        """Add an item at the end of the key's list, creating it; return the new length."""
        ...

    async def get_range(self, namespace: str, key: str, start: int, count: int) -> list[bytes]:
        """Return the items at positions [p, p + count) that exist, oldest first.

        p is `start` when it is not negative, else the list's length plus `start`.
        """
        ...

    async def length(self, namespace: str, key: str) -> int:
        """Return the number of items in the key's list, 0 when there is none."""
        ...

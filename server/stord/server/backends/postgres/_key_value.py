from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from stord.server.backends.postgres._pool import Pool
from stord.server.kv.glob import literal_prefix, prefix_successor
from stord.server.kv.port import Keyspace, SetCondition, ValueEntry
from stord.server.ports import Clock

# Every statement takes the time from the injected clock as `now`, never the server's now(): tests move time,
# and several daemons agree on expiry as far as their clocks agree. A value is live while
# `expires_at IS NULL OR expires_at > now`, exactly as the memory backend decides.

_GET = """
SELECT value FROM kv_values
WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s AND key = %(key)s
  AND (expires_at IS NULL OR expires_at > %(now)s)
"""

_GET_MANY = """
SELECT key, value FROM kv_values
WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s AND key = ANY(%(keys)s)
  AND (expires_at IS NULL OR expires_at > %(now)s)
"""

_SET = """
INSERT INTO kv_values (keyspace, namespace, key, value, expires_at)
VALUES (%(keyspace)s, %(namespace)s, %(key)s, %(value)s, %(expires_at)s)
ON CONFLICT (keyspace, namespace, key) DO UPDATE
    SET value = excluded.value, expires_at = excluded.expires_at
"""

# ON CONFLICT locks the existing row and evaluates WHERE on its latest version, so two concurrent callers
# cannot both find the key absent; an expired value counts as absent and is overwritten.
_SET_IF_ABSENT = """
INSERT INTO kv_values AS old (keyspace, namespace, key, value, expires_at)
VALUES (%(keyspace)s, %(namespace)s, %(key)s, %(value)s, %(expires_at)s)
ON CONFLICT (keyspace, namespace, key) DO UPDATE
    SET value = excluded.value, expires_at = excluded.expires_at
    WHERE old.expires_at IS NOT NULL AND old.expires_at <= %(now)s
RETURNING true
"""

# An UPDATE rechecks its WHERE on the row it locks, so a value deleted or expired meanwhile is not revived.
_SET_IF_PRESENT = """
UPDATE kv_values SET value = %(value)s, expires_at = %(expires_at)s
WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s AND key = %(key)s
  AND (expires_at IS NULL OR expires_at > %(now)s)
RETURNING true
"""

_DELETE_VALUE = """
DELETE FROM kv_values
WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s AND key = %(key)s
RETURNING expires_at IS NULL OR expires_at > %(now)s
"""

_DELETE_LIST = """
DELETE FROM kv_lists
WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s AND key = %(key)s
RETURNING key
"""

# Items go in a statement after their list row's: deleting the row waits for a concurrent append that holds
# it, and only a later statement sees the item that append committed.
_DELETE_ITEMS = """
DELETE FROM kv_list_items
WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s AND key = ANY(%(keys)s)
"""

_CLEAR_VALUES = """
DELETE FROM kv_values WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s
"""

_CLEAR_LISTS = """
DELETE FROM kv_lists WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s
RETURNING key
"""

_EXISTS = """
SELECT EXISTS (
    SELECT FROM kv_values
    WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s AND key = %(key)s
      AND (expires_at IS NULL OR expires_at > %(now)s)
) OR EXISTS (
    SELECT FROM kv_lists
    WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s AND key = %(key)s
)
"""

# `low` (the pattern's literal prefix) and `high` (the least string above every key with that prefix) bound
# the primary key scan even in a generic plan, where LIKE with a parameter bounds nothing; LIKE then decides.
# Each branch reads the index in key order and stops at the limit, so only 2 * limit keys are sorted.
_KEYS_TEMPLATE = """
SELECT DISTINCT key FROM (
    (SELECT key FROM kv_values
     WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s
       AND key >= %(low)s AND key > %(after)s{high}
       AND key LIKE %(like)s ESCAPE '\\'
       AND (expires_at IS NULL OR expires_at > %(now)s)
     ORDER BY key
     LIMIT %(limit)s)
    UNION ALL
    (SELECT key FROM kv_lists
     WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s
       AND key >= %(low)s AND key > %(after)s{high}
       AND key LIKE %(like)s ESCAPE '\\'
     ORDER BY key
     LIMIT %(limit)s)
) AS found
ORDER BY key
LIMIT %(limit)s
"""
_KEYS = _KEYS_TEMPLATE.format(high="")
_KEYS_BELOW = _KEYS_TEMPLATE.format(high=" AND key < %(high)s")

# The upsert's row lock makes concurrent appends to one key take turns, each getting the next length; the
# item goes in at position length - 1 within the same statement.
_APPEND = """
WITH list AS (
    INSERT INTO kv_lists AS old (keyspace, namespace, key, length)
    VALUES (%(keyspace)s, %(namespace)s, %(key)s, 1)
    ON CONFLICT (keyspace, namespace, key) DO UPDATE SET length = old.length + 1
    RETURNING length
)
INSERT INTO kv_list_items (keyspace, namespace, key, position, value)
SELECT %(keyspace)s, %(namespace)s, %(key)s, length - 1, %(value)s FROM list
RETURNING position + 1
"""

# Positions [first, stop), offset by the list's length when counted from the end. The offset is an
# uncorrelated subquery, computed once, so the bounds reach the primary key scan of the items.
_GET_RANGE = """
SELECT value FROM kv_list_items
WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s AND key = %(key)s
  AND position >= %(first)s::bigint + {offset}
  AND position < %(stop)s::bigint + {offset}
ORDER BY position
""".format(
    offset="""(
    SELECT CASE WHEN %(from_end)s THEN length ELSE 0 END FROM kv_lists
    WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s AND key = %(key)s)"""
)

_LENGTH = """
SELECT length FROM kv_lists
WHERE keyspace = %(keyspace)s AND namespace = %(namespace)s AND key = %(key)s
"""

_BIGINT_MAX = 2**63 - 1
_LATEST = datetime.max.replace(tzinfo=UTC)
_LIKE_ESCAPES = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_", "*": "%", "?": "_"})


def _timestamp(seconds: float) -> datetime:
    """Return the instant `seconds` after the epoch; beyond datetime's range, its last instant."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        return _LATEST


class PostgresKeyValueStore:
    """Values, expiry and lists of one keyspace in the kv_* tables."""

    def __init__(self, pool: Pool, keyspace: Keyspace, clock: Clock) -> None:
        self._pool = pool
        self._keyspace = keyspace.value
        self._clock = clock

    def _params(self, namespace: str, **params: Any) -> dict[str, Any]:
        return {"keyspace": self._keyspace, "namespace": namespace, **params}

    def _expiry(self, ttl: float | None, now: float) -> datetime | None:
        return None if ttl is None else _timestamp(now + ttl)

    async def get(self, namespace: str, key: str) -> bytes | None:
        params = self._params(namespace, key=key, now=_timestamp(self._clock()))
        async with self._pool.connection() as connection:
            row = await (await connection.execute(_GET, params)).fetchone()
        if row is None:
            return None
        value: bytes = row[0]
        return value

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        params = self._params(namespace, keys=list(keys), now=_timestamp(self._clock()))
        async with self._pool.connection() as connection:
            rows = await (await connection.execute(_GET_MANY, params)).fetchall()
        found: dict[str, bytes] = dict(rows)
        return [found.get(key) for key in keys]

    async def set(self, namespace: str, entry: ValueEntry, *, condition: SetCondition) -> bool:
        key, value, ttl = entry.key, entry.value, entry.ttl
        now = self._clock()
        params = self._params(
            namespace, key=key, value=value, expires_at=self._expiry(ttl, now), now=_timestamp(now)
        )
        async with self._pool.connection() as connection:
            if condition is SetCondition.ALWAYS:
                await connection.execute(_SET, params)
                return True
            statement = _SET_IF_ABSENT if condition is SetCondition.IF_ABSENT else _SET_IF_PRESENT
            row = await (await connection.execute(statement, params)).fetchone()
        return row is not None

    async def set_many(self, namespace: str, entries: Sequence[ValueEntry]) -> None:
        if not entries:
            return
        now = self._clock()
        # One row per key, the last entry winning, as an upsert cannot touch one row twice in a statement.
        latest = {entry.key: entry for entry in entries}
        rows = [
            self._params(namespace, key=entry.key, value=entry.value, expires_at=self._expiry(entry.ttl, now))
            for entry in latest.values()
        ]
        async with (
            self._pool.connection() as connection,
            connection.transaction(),
            connection.cursor() as cursor,
        ):
            await cursor.executemany(_SET, rows)

    async def delete(self, namespace: str, key: str) -> bool:
        params = self._params(namespace, key=key, now=_timestamp(self._clock()))
        async with self._pool.connection() as connection, connection.transaction():
            value = await (await connection.execute(_DELETE_VALUE, params)).fetchone()
            had_list = await (await connection.execute(_DELETE_LIST, params)).fetchone() is not None
            if had_list:
                await connection.execute(_DELETE_ITEMS, self._params(namespace, keys=[key]))
        return had_list or (value is not None and bool(value[0]))

    async def exists(self, namespace: str, key: str) -> bool:
        params = self._params(namespace, key=key, now=_timestamp(self._clock()))
        async with self._pool.connection() as connection:
            row = await (await connection.execute(_EXISTS, params)).fetchone()
        return row is not None and bool(row[0])

    async def clear(self, namespace: str) -> None:
        params = self._params(namespace)
        async with self._pool.connection() as connection, connection.transaction():
            await connection.execute(_CLEAR_VALUES, params)
            lists = await (await connection.execute(_CLEAR_LISTS, params)).fetchall()
            if lists:
                keys = [key for (key,) in lists]
                await connection.execute(_DELETE_ITEMS, self._params(namespace, keys=keys))

    async def keys(self, namespace: str, pattern: str, *, after: str | None, limit: int) -> list[str]:
        # No stored key holds U+0000 (PostgreSQL text cannot), so a pattern with one matches nothing, and the
        # keys above `after` are those above its part before the first U+0000.
        if "\x00" in pattern:
            return []
        after = after.partition("\x00")[0] if after else ""
        prefix = literal_prefix(pattern)
        high = prefix_successor(prefix)
        params = self._params(
            namespace,
            low=prefix,
            high=high,
            after=after,  # every key is greater than "", keys being non-empty
            like=pattern.translate(_LIKE_ESCAPES),
            now=_timestamp(self._clock()),
            limit=limit,
        )
        async with self._pool.connection() as connection:
            rows = await (await connection.execute(_KEYS if high is None else _KEYS_BELOW, params)).fetchall()
        return [key for (key,) in rows]

    async def append(self, namespace: str, key: str, value: bytes) -> int:
        params = self._params(namespace, key=key, value=value)
        async with self._pool.connection() as connection:
            row = await (await connection.execute(_APPEND, params)).fetchone()
        assert row is not None, "INSERT ... RETURNING returned no row"
        length: int = row[0]
        return length

    async def get_range(self, namespace: str, key: str, start: int, count: int) -> list[bytes]:
        from_end = start < 0
        # Positions lie in [0, length), so clamping the bounds changes nothing but keeps them in bigint.
        if from_end:
            first, stop = start, min(start + count, 0)
        else:
            first, stop = min(start, _BIGINT_MAX), min(start + count, _BIGINT_MAX)
        params = self._params(namespace, key=key, first=first, stop=stop, from_end=from_end)
        async with self._pool.connection() as connection:
            rows = await (await connection.execute(_GET_RANGE, params)).fetchall()
        return [value for (value,) in rows]

    async def length(self, namespace: str, key: str) -> int:
        params = self._params(namespace, key=key)
        async with self._pool.connection() as connection:
            row = await (await connection.execute(_LENGTH, params)).fetchone()
        if row is None:
            return 0
        length: int = row[0]
        return length

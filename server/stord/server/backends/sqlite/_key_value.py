"""The key-value contract (DESIGN 4.1) over the tables of migrations/sqlite/0001_key_value.sql.

Time comes from the injected clock and is passed to every statement as `now`, never from SQLite: tests move
the clock. A value whose `expires_at <= now` is treated as absent everywhere, before the sweeper deletes it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from stord.server.backends.sqlite._engine import SqliteEngine
from stord.server.kv.glob import glob_regex, literal_prefix, prefix_successor
from stord.server.kv.port import Keyspace, SetCondition, ValueEntry
from stord.server.ports import Clock

__all__ = ["SqliteKeyValueStore", "delete_expired"]

_INT64_MAX = 2**63 - 1

_LIVE = "(expires_at IS NULL OR expires_at > :now)"
_KEY = "keyspace = :keyspace AND namespace = :namespace AND key = :key"
_SPACE = "keyspace = :keyspace AND namespace = :namespace"

_GET = f"SELECT value FROM kv_values WHERE {_KEY} AND {_LIVE}"

_UPSERT = """
INSERT INTO kv_values (keyspace, namespace, key, value, expires_at)
VALUES (:keyspace, :namespace, :key, :value, :expires_at)
ON CONFLICT (keyspace, namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""

# Writes only over an expired value: the upsert's changes() is 0 when a live value stopped it.
_SET_IF_ABSENT = f"{_UPSERT} WHERE kv_values.expires_at IS NOT NULL AND kv_values.expires_at <= :now"

_SET_IF_PRESENT = f"UPDATE kv_values SET value = :value, expires_at = :expires_at WHERE {_KEY} AND {_LIVE}"

# Not DELETE ... RETURNING: SQLite 3.40 returns wrong values for expressions (`expires_at IS NULL`) there on a
# WITHOUT ROWID table. The writer thread is the only writer, so reading first is not a race.
_LIVE_VALUE = f"SELECT {_LIVE} FROM kv_values WHERE {_KEY}"
_DELETE_VALUE = f"DELETE FROM kv_values WHERE {_KEY}"
_DELETE_LIST = f"DELETE FROM kv_lists WHERE {_KEY}"
_DELETE_ITEMS = f"DELETE FROM kv_list_items WHERE {_KEY}"

_EXISTS = f"""
SELECT EXISTS (SELECT 1 FROM kv_values WHERE {_KEY} AND {_LIVE})
    OR EXISTS (SELECT 1 FROM kv_lists WHERE {_KEY})
"""

_CLEAR = [f"DELETE FROM {table} WHERE {_SPACE}" for table in ("kv_values", "kv_lists", "kv_list_items")]

_APPEND_LENGTH = """
INSERT INTO kv_lists (keyspace, namespace, key, length) VALUES (:keyspace, :namespace, :key, 1)
ON CONFLICT (keyspace, namespace, key) DO UPDATE SET length = length + 1
RETURNING length
"""
_APPEND_ITEM = """
INSERT INTO kv_list_items (keyspace, namespace, key, position, value)
VALUES (:keyspace, :namespace, :key, :position, :value)
"""
_LENGTH = f"SELECT length FROM kv_lists WHERE {_KEY}"
_RANGE = f"""
SELECT value FROM kv_list_items WHERE {_KEY} AND position >= :low AND position < :high ORDER BY position
"""

_DELETE_EXPIRED = """
DELETE FROM kv_values WHERE (keyspace, namespace, key) IN (
    SELECT keyspace, namespace, key FROM kv_values WHERE expires_at <= :now LIMIT :limit
)
"""


def _keys_query(prefix: str, after: str | None, *, limited: bool) -> tuple[str, dict[str, object]]:
    """Build the ordered union of live value keys and list keys in the range the prefix and `after` allow."""
    bounds: list[str] = []
    parameters: dict[str, object] = {}
    if after is not None and after >= prefix:
        bounds.append("key > :low")
        parameters["low"] = after
    elif prefix:
        bounds.append("key >= :low")
        parameters["low"] = prefix
    high = prefix_successor(prefix) if prefix else None
    if high is not None:
        bounds.append("key < :high")
        parameters["high"] = high
    where = " ".join(f"AND {bound}" for bound in bounds)
    sql = (
        f"SELECT key FROM kv_values WHERE {_SPACE} {where} AND {_LIVE}"
        f" UNION SELECT key FROM kv_lists WHERE {_SPACE} {where}"
        " ORDER BY key"
    )
    if limited:
        sql += " LIMIT :limit"
    return sql, parameters


async def delete_expired(engine: SqliteEngine, *, now: float, batch: int = 1000) -> int:
    """Delete values expired at `now`, `batch` rows per write so other writes interleave; return how many."""
    deleted = 0
    while True:
        count = await engine.write(
            lambda connection: connection.execute(_DELETE_EXPIRED, {"now": now, "limit": batch}).rowcount
        )
        deleted += count
        if count < batch:
            return deleted


class SqliteKeyValueStore:
    """One role's keys (`keyspace`) in the shared kv tables; writes go through the engine's writer thread."""

    def __init__(self, engine: SqliteEngine, keyspace: Keyspace, clock: Clock) -> None:
        self._engine = engine
        self._keyspace = keyspace.value
        self._clock = clock

    def _key(self, namespace: str, key: str) -> dict[str, object]:
        return {"keyspace": self._keyspace, "namespace": namespace, "key": key}

    async def get(self, namespace: str, key: str) -> bytes | None:
        parameters = {**self._key(namespace, key), "now": self._clock()}

        def run(connection: sqlite3.Connection) -> bytes | None:
            row = connection.execute(_GET, parameters).fetchone()
            return None if row is None else bytes(row[0])

        return await self._engine.lookup(run)

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        now = self._clock()

        def run(connection: sqlite3.Connection) -> list[bytes | None]:
            # One primary-key lookup per key inside one read transaction: exact, and cheap in SQLite.
            results: list[bytes | None] = []
            for key in keys:
                row = connection.execute(_GET, {**self._key(namespace, key), "now": now}).fetchone()
                results.append(None if row is None else bytes(row[0]))
            return results

        return await self._engine.lookup(run)

    async def set(self, namespace: str, entry: ValueEntry, *, condition: SetCondition) -> bool:
        key, value, ttl = entry.key, entry.value, entry.ttl
        now = self._clock()
        parameters = {
            **self._key(namespace, key),
            "value": value,
            "expires_at": None if ttl is None else now + ttl,
            "now": now,
        }
        statement = {
            SetCondition.ALWAYS: _UPSERT,
            SetCondition.IF_ABSENT: _SET_IF_ABSENT,
            SetCondition.IF_PRESENT: _SET_IF_PRESENT,
        }[condition]

        def run(connection: sqlite3.Connection) -> bool:
            return connection.execute(statement, parameters).rowcount > 0

        return await self._engine.write(run)

    async def set_many(self, namespace: str, entries: Sequence[ValueEntry]) -> None:
        now = self._clock()
        rows = [
            {
                **self._key(namespace, entry.key),
                "value": entry.value,
                "expires_at": None if entry.ttl is None else now + entry.ttl,
            }
            for entry in entries
        ]

        def run(connection: sqlite3.Connection) -> None:
            # In order, so a key given twice keeps its last entry; one savepoint makes it all or nothing.
            connection.executemany(_UPSERT, rows)

        await self._engine.write(run)

    async def delete(self, namespace: str, key: str) -> bool:
        parameters = {**self._key(namespace, key), "now": self._clock()}

        def run(connection: sqlite3.Connection) -> bool:
            row = connection.execute(_LIVE_VALUE, parameters).fetchone()
            had_value = row is not None and bool(row[0])
            if row is not None:
                connection.execute(_DELETE_VALUE, parameters)
            had_list = connection.execute(_DELETE_LIST, parameters).rowcount > 0
            if had_list:
                connection.execute(_DELETE_ITEMS, parameters)
            return had_value or had_list

        return await self._engine.write(run)

    async def exists(self, namespace: str, key: str) -> bool:
        parameters = {**self._key(namespace, key), "now": self._clock()}

        def run(connection: sqlite3.Connection) -> bool:
            return bool(connection.execute(_EXISTS, parameters).fetchone()[0])

        return await self._engine.lookup(run)

    async def clear(self, namespace: str) -> None:
        parameters = {"keyspace": self._keyspace, "namespace": namespace}

        def run(connection: sqlite3.Connection) -> None:
            for statement in _CLEAR:
                connection.execute(statement, parameters)

        await self._engine.write(run)

    async def keys(self, namespace: str, pattern: str, *, after: str | None, limit: int) -> list[str]:
        # A range scan over the pattern's literal prefix, then the shared glob regex: no SQL wildcard syntax
        # (LIKE's % and _, GLOB's [ ]) can leak into the user's pattern, and the order is code point order.
        prefix, regex = literal_prefix(pattern), glob_regex(pattern)
        # With `prefix*` every key in the range matches, and with no wildcard at all the one key that can
        # match comes first: either way SQL may stop at `limit` rows.
        limited = set(pattern[len(prefix) :]) <= {"*"}
        sql, bounds = _keys_query(prefix, after, limited=limited)
        parameters = {**bounds, "keyspace": self._keyspace, "namespace": namespace, "now": self._clock()}
        if limited:
            parameters["limit"] = limit

        def run(connection: sqlite3.Connection) -> list[str]:
            found: list[str] = []
            for (key,) in connection.execute(sql, parameters):
                if regex.fullmatch(key):
                    found.append(key)
                    if len(found) == limit:
                        break
            return found

        return await self._engine.read(run)

    async def append(self, namespace: str, key: str, value: bytes) -> int:
        parameters: dict[str, object] = self._key(namespace, key)

        def run(connection: sqlite3.Connection) -> int:
            (length,) = connection.execute(_APPEND_LENGTH, parameters).fetchall()[0]
            connection.execute(_APPEND_ITEM, {**parameters, "position": length - 1, "value": value})
            return int(length)

        return await self._engine.write(run)

    async def get_range(self, namespace: str, key: str, start: int, count: int) -> list[bytes]:
        parameters: dict[str, object] = self._key(namespace, key)

        def run(connection: sqlite3.Connection) -> list[bytes]:
            first = start
            if start < 0:
                row = connection.execute(_LENGTH, parameters).fetchone()
                first = (0 if row is None else row[0]) + start
            low, high = max(first, 0), min(max(first + count, 0), _INT64_MAX)
            if high <= low:
                return []
            rows = connection.execute(_RANGE, {**parameters, "low": low, "high": high})
            return [bytes(value) for (value,) in rows]

        return await self._engine.lookup(run)

    async def length(self, namespace: str, key: str) -> int:
        parameters = self._key(namespace, key)

        def run(connection: sqlite3.Connection) -> int:
            row = connection.execute(_LENGTH, parameters).fetchone()
            return 0 if row is None else int(row[0])

        return await self._engine.lookup(run)

"""The manifest store (DESIGN 4.6) over the tables of migrations/postgres/0004_agents_manifests.sql.

Documents are jsonb; created_at is split into whole seconds and nanoseconds, so every instant a protobuf
Timestamp can hold orders exactly (timestamptz keeps only microseconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from stord.server.backends.postgres._pool import Pool
from stord.server.backends.tables import HANDLER_MANIFESTS, MANIFEST_TRANSFORMERS, Rows
from stord.server.manifests.port import (
    DocumentKey,
    HandlerManifestRecord,
    ManifestDocumentKind,
    ManifestStats,
    TransformerRecord,
)
from stord.server.ports import Clock, JsonObject

__all__ = ["PostgresManifestStore"]

_NANOS = 1_000_000_000

_PUT_MANIFEST = """
INSERT INTO handler_manifests (namespace, handler_id, version, created_seconds, created_nanos, document)
VALUES (%(namespace)s, %(handler_id)s, %(version)s, %(seconds)s, %(nanos)s, %(document)s)
ON CONFLICT (namespace, handler_id, version) DO UPDATE SET
    created_seconds = excluded.created_seconds, created_nanos = excluded.created_nanos,
    document = excluded.document
"""

_MANIFEST_COLUMNS = HANDLER_MANIFESTS.names()
_HANDLER = "namespace = %(namespace)s AND handler_id = %(handler_id)s"

_GET_MANIFEST = f"""
SELECT {_MANIFEST_COLUMNS} FROM handler_manifests WHERE {_HANDLER} AND version = %(version)s
"""

_LATEST_MANIFEST = f"""
SELECT {_MANIFEST_COLUMNS} FROM handler_manifests WHERE {_HANDLER}
ORDER BY created_seconds DESC, created_nanos DESC, version DESC
LIMIT 1
"""

_LIST_MANIFESTS = f"""
SELECT {_MANIFEST_COLUMNS} FROM handler_manifests
WHERE {_HANDLER} AND (created_seconds, created_nanos, version) > (%(seconds)s, %(nanos)s, %(version)s)
ORDER BY created_seconds, created_nanos, version
LIMIT %(limit)s
"""

_LIST_ALL_MANIFESTS = f"""
SELECT {_MANIFEST_COLUMNS} FROM handler_manifests WHERE {_HANDLER}
ORDER BY created_seconds, created_nanos, version
LIMIT %(limit)s
"""

_PUT_TRANSFORMER = """
INSERT INTO manifest_transformers (namespace, id, handler_id, from_version, to_version, document)
VALUES (%(namespace)s, %(id)s, %(handler_id)s, %(from_version)s, %(to_version)s, %(document)s)
ON CONFLICT (namespace, id) DO UPDATE SET
    handler_id = excluded.handler_id, from_version = excluded.from_version,
    to_version = excluded.to_version, document = excluded.document
"""

_TRANSFORMER_COLUMNS = MANIFEST_TRANSFORMERS.names()

_GET_TRANSFORMER = f"""
SELECT {_TRANSFORMER_COLUMNS} FROM manifest_transformers WHERE namespace = %(namespace)s AND id = %(id)s
"""

_TRANSFORMERS_BETWEEN = f"""
SELECT {_TRANSFORMER_COLUMNS} FROM manifest_transformers
WHERE namespace = %(namespace)s AND handler_id = %(handler_id)s
  AND from_version = %(from_version)s AND to_version = %(to_version)s
ORDER BY id
"""

_PUT_DOCUMENT = """
INSERT INTO manifest_documents (namespace, kind, id, version, document)
VALUES (%(namespace)s, %(kind)s, %(id)s, %(version)s, %(document)s)
ON CONFLICT (namespace, kind, id, version) DO UPDATE SET document = excluded.document
"""

_KIND = "namespace = %(namespace)s AND kind = %(kind)s"

_GET_DOCUMENT = f"""
SELECT document FROM manifest_documents WHERE {_KIND} AND id = %(id)s AND version = %(version)s
"""

_LIST_DOCUMENTS = f"""
SELECT id, version, document FROM manifest_documents
WHERE {_KIND} AND (id, version) > (%(id)s, %(version)s)
ORDER BY id, version
LIMIT %(limit)s
"""

_CLEAR = [
    "DELETE FROM handler_manifests WHERE namespace = %(namespace)s",
    "DELETE FROM manifest_transformers WHERE namespace = %(namespace)s",
    "DELETE FROM manifest_documents WHERE namespace = %(namespace)s",
]

_STATS = """
SELECT
    (SELECT count(*) FROM handler_manifests WHERE namespace = %(namespace)s),
    (SELECT count(*) FROM manifest_transformers WHERE namespace = %(namespace)s),
    (SELECT count(*) FROM manifest_documents WHERE namespace = %(namespace)s AND kind = %(hooks)s),
    (SELECT count(*) FROM manifest_documents WHERE namespace = %(namespace)s AND kind = %(gtypes)s),
    (SELECT count(*) FROM manifest_documents WHERE namespace = %(namespace)s AND kind = %(graphs)s),
    (SELECT count(*) FROM manifest_documents WHERE namespace = %(namespace)s AND kind = %(timescape)s)
"""


def _manifest(row: Sequence[Any]) -> HandlerManifestRecord:
    handler_id, version, seconds, nanos, document = row
    return HandlerManifestRecord(handler_id, version, seconds * _NANOS + nanos, document)


def _transformer(row: Sequence[Any]) -> TransformerRecord:
    transformer_id, handler_id, from_version, to_version, document = row
    return TransformerRecord(transformer_id, handler_id, from_version, to_version, document)


class PostgresManifestStore:
    """Manifests in three tables, one statement per operation (Clear: one transaction)."""

    def __init__(self, pool: Pool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock

    async def _execute(self, statement: str, params: dict[str, Any]) -> None:
        async with self._pool.connection() as connection:
            await connection.execute(statement, params)

    async def _fetch_one(self, statement: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        async with self._pool.connection() as connection:
            return await (await connection.execute(statement, params)).fetchone()

    async def _fetch_all(self, statement: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as connection:
            return await (await connection.execute(statement, params)).fetchall()

    async def put_manifest(
        self, namespace: str, handler_id: str, version: str, document: JsonObject, *, created_at: int | None
    ) -> int:
        if created_at is None:
            created_at = round(self._clock() * 1e9)
        seconds, nanos = divmod(created_at, _NANOS)
        params = {
            "namespace": namespace,
            "handler_id": handler_id,
            "version": version,
            "seconds": seconds,
            "nanos": nanos,
            "document": Jsonb(document),
        }
        await self._execute(_PUT_MANIFEST, params)
        return created_at

    async def get_manifest(
        self, namespace: str, handler_id: str, version: str | None
    ) -> HandlerManifestRecord | None:
        params = {"namespace": namespace, "handler_id": handler_id, "version": version}
        row = await self._fetch_one(_LATEST_MANIFEST if version is None else _GET_MANIFEST, params)
        return None if row is None else _manifest(row)

    async def list_manifests(
        self, namespace: str, handler_id: str, *, after: tuple[int, str] | None, limit: int
    ) -> list[HandlerManifestRecord]:
        params: dict[str, Any] = {"namespace": namespace, "handler_id": handler_id, "limit": limit}
        statement = _LIST_ALL_MANIFESTS
        if after is not None:
            seconds, nanos = divmod(after[0], _NANOS)
            params.update(seconds=seconds, nanos=nanos, version=after[1])
            statement = _LIST_MANIFESTS
        return [_manifest(row) for row in await self._fetch_all(statement, params)]

    async def put_transformer(self, namespace: str, transformer: TransformerRecord) -> None:
        params = {
            "namespace": namespace,
            "id": transformer.id,
            "handler_id": transformer.handler_id,
            "from_version": transformer.from_version,
            "to_version": transformer.to_version,
            "document": Jsonb(transformer.document),
        }
        await self._execute(_PUT_TRANSFORMER, params)

    async def get_transformer(self, namespace: str, transformer_id: str) -> TransformerRecord | None:
        row = await self._fetch_one(_GET_TRANSFORMER, {"namespace": namespace, "id": transformer_id})
        return None if row is None else _transformer(row)

    async def transformers_between(
        self, namespace: str, handler_id: str, from_version: str, to_version: str
    ) -> list[TransformerRecord]:
        params = {
            "namespace": namespace,
            "handler_id": handler_id,
            "from_version": from_version,
            "to_version": to_version,
        }
        return [_transformer(row) for row in await self._fetch_all(_TRANSFORMERS_BETWEEN, params)]

    async def put_document(
        self, namespace: str, kind: ManifestDocumentKind, key: DocumentKey, document: JsonObject
    ) -> None:
        params = {
            "namespace": namespace,
            "kind": kind.value,
            "id": key[0],
            "version": key[1],
            "document": Jsonb(document),
        }
        await self._execute(_PUT_DOCUMENT, params)

    async def get_document(
        self, namespace: str, kind: ManifestDocumentKind, key: DocumentKey
    ) -> JsonObject | None:
        params = {"namespace": namespace, "kind": kind.value, "id": key[0], "version": key[1]}
        row = await self._fetch_one(_GET_DOCUMENT, params)
        return None if row is None else _object(row[0])

    async def list_documents(
        self, namespace: str, kind: ManifestDocumentKind, *, after: DocumentKey | None, limit: int
    ) -> list[tuple[DocumentKey, JsonObject]]:
        low = after or ("", "")  # every stored id is non-empty, so ("", "") is below them all
        params = {"namespace": namespace, "kind": kind.value, "id": low[0], "version": low[1], "limit": limit}
        rows = await self._fetch_all(_LIST_DOCUMENTS, params)
        return [((row_id, version), _object(document)) for row_id, version, document in rows]

    async def clear(self, namespace: str) -> None:
        async with self._pool.connection() as connection, connection.transaction():
            for statement in _CLEAR:
                await connection.execute(statement, {"namespace": namespace})

    async def stats(self, namespace: str) -> ManifestStats:
        params = {
            "namespace": namespace,
            "hooks": ManifestDocumentKind.HOOK_MANIFEST.value,
            "gtypes": ManifestDocumentKind.GTYPE.value,
            "graphs": ManifestDocumentKind.VERSION_GRAPH.value,
            "timescape": ManifestDocumentKind.TIMESCAPE_METADATA.value,
        }
        row = await self._fetch_one(_STATS, params)
        assert row is not None, "a SELECT without FROM returns one row"
        manifests, transformers, hooks, gtypes, graphs, timescape = row
        return ManifestStats(
            manifests=manifests,
            hook_manifests=hooks,
            gtypes=gtypes,
            transformers=transformers,
            version_graphs=graphs,
            timescape_metadata=timescape,
        )


def _object(document: Any) -> JsonObject:
    """Type a jsonb column that holds an object, as psycopg decodes it."""
    value: JsonObject = document
    return value


MANIFEST_ROWS = Rows(_MANIFEST_COLUMNS, _manifest)
"""How export reads the handler_manifests table (after its namespace column)."""

TRANSFORMER_ROWS = Rows(_TRANSFORMER_COLUMNS, _transformer)
"""How export reads the manifest_transformers table (after its namespace column)."""

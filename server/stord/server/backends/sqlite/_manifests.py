"""The manifest store (DESIGN 4.6) over the tables of migrations/sqlite/0004_agents_manifests.sql.

Documents are JSON text; created_at is split into whole seconds and nanoseconds, so every instant a
protobuf Timestamp can hold orders exactly (nanoseconds alone would overflow 64 bits before the year 2262).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from stord.server.backends.sqlite._engine import SqliteEngine
from stord.server.backends.tables import HANDLER_MANIFESTS, MANIFEST_TRANSFORMERS, Rows
from stord.server.manifests.port import (
    DocumentKey,
    HandlerManifestRecord,
    ManifestDocumentKind,
    ManifestStats,
    TransformerRecord,
)
from stord.server.ports import Clock, JsonObject

__all__ = ["SqliteManifestStore"]

_NANOS = 1_000_000_000

_PUT_MANIFEST = """
INSERT INTO handler_manifests (namespace, handler_id, version, created_seconds, created_nanos, document)
VALUES (:namespace, :handler_id, :version, :seconds, :nanos, :document)
ON CONFLICT (namespace, handler_id, version) DO UPDATE SET
    created_seconds = excluded.created_seconds, created_nanos = excluded.created_nanos,
    document = excluded.document
"""

_MANIFEST_COLUMNS = HANDLER_MANIFESTS.names()
_HANDLER = "namespace = :namespace AND handler_id = :handler_id"

_GET_MANIFEST = f"SELECT {_MANIFEST_COLUMNS} FROM handler_manifests WHERE {_HANDLER} AND version = :version"

_LATEST_MANIFEST = f"""
SELECT {_MANIFEST_COLUMNS} FROM handler_manifests WHERE {_HANDLER}
ORDER BY created_seconds DESC, created_nanos DESC, version DESC
LIMIT 1
"""

_LIST_MANIFESTS = f"""
SELECT {_MANIFEST_COLUMNS} FROM handler_manifests
WHERE {_HANDLER} AND (created_seconds, created_nanos, version) > (:seconds, :nanos, :version)
ORDER BY created_seconds, created_nanos, version
LIMIT :limit
"""

_LIST_ALL_MANIFESTS = f"""
SELECT {_MANIFEST_COLUMNS} FROM handler_manifests WHERE {_HANDLER}
ORDER BY created_seconds, created_nanos, version
LIMIT :limit
"""

_PUT_TRANSFORMER = """
INSERT INTO manifest_transformers (namespace, id, handler_id, from_version, to_version, document)
VALUES (:namespace, :id, :handler_id, :from_version, :to_version, :document)
ON CONFLICT (namespace, id) DO UPDATE SET
    handler_id = excluded.handler_id, from_version = excluded.from_version,
    to_version = excluded.to_version, document = excluded.document
"""

_TRANSFORMER_COLUMNS = MANIFEST_TRANSFORMERS.names()

_GET_TRANSFORMER = f"""
SELECT {_TRANSFORMER_COLUMNS} FROM manifest_transformers WHERE namespace = :namespace AND id = :id
"""

_TRANSFORMERS_BETWEEN = f"""
SELECT {_TRANSFORMER_COLUMNS} FROM manifest_transformers
WHERE namespace = :namespace AND handler_id = :handler_id
  AND from_version = :from_version AND to_version = :to_version
ORDER BY id
"""

_PUT_DOCUMENT = """
INSERT INTO manifest_documents (namespace, kind, id, version, document)
VALUES (:namespace, :kind, :id, :version, :document)
ON CONFLICT (namespace, kind, id, version) DO UPDATE SET document = excluded.document
"""

_KIND = "namespace = :namespace AND kind = :kind"

_GET_DOCUMENT = f"SELECT document FROM manifest_documents WHERE {_KIND} AND id = :id AND version = :version"

_LIST_DOCUMENTS = f"""
SELECT id, version, document FROM manifest_documents
WHERE {_KIND} AND (id, version) > (:id, :version)
ORDER BY id, version
LIMIT :limit
"""

_TABLES = ("handler_manifests", "manifest_transformers", "manifest_documents")
_CLEAR = [f"DELETE FROM {table} WHERE namespace = :namespace" for table in _TABLES]

_STATS = """
SELECT
    (SELECT count(*) FROM handler_manifests WHERE namespace = :namespace),
    (SELECT count(*) FROM manifest_transformers WHERE namespace = :namespace),
    (SELECT count(*) FROM manifest_documents WHERE namespace = :namespace AND kind = :hooks),
    (SELECT count(*) FROM manifest_documents WHERE namespace = :namespace AND kind = :gtypes),
    (SELECT count(*) FROM manifest_documents WHERE namespace = :namespace AND kind = :graphs),
    (SELECT count(*) FROM manifest_documents WHERE namespace = :namespace AND kind = :timescape)
"""


def _dump(document: JsonObject) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def _manifest(row: Sequence[Any]) -> HandlerManifestRecord:
    handler_id, version, seconds, nanos, document = row
    return HandlerManifestRecord(handler_id, version, seconds * _NANOS + nanos, json.loads(document))


def _transformer(row: Sequence[Any]) -> TransformerRecord:
    transformer_id, handler_id, from_version, to_version, document = row
    return TransformerRecord(transformer_id, handler_id, from_version, to_version, json.loads(document))


class SqliteManifestStore:
    """Manifests in three tables; writes on the engine's writer thread, key lookups inline."""

    def __init__(self, engine: SqliteEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def put_manifest(
        self, namespace: str, handler_id: str, version: str, document: JsonObject, *, created_at: int | None
    ) -> int:
        if created_at is None:
            created_at = round(self._clock() * 1e9)
        seconds, nanos = divmod(created_at, _NANOS)
        parameters = {
            "namespace": namespace,
            "handler_id": handler_id,
            "version": version,
            "seconds": seconds,
            "nanos": nanos,
            "document": _dump(document),
        }
        await self._engine.write(lambda connection: connection.execute(_PUT_MANIFEST, parameters))
        return created_at

    async def get_manifest(
        self, namespace: str, handler_id: str, version: str | None
    ) -> HandlerManifestRecord | None:
        parameters = {"namespace": namespace, "handler_id": handler_id, "version": version}
        statement = _LATEST_MANIFEST if version is None else _GET_MANIFEST

        def run(connection: sqlite3.Connection) -> HandlerManifestRecord | None:
            row = connection.execute(statement, parameters).fetchone()
            return None if row is None else _manifest(row)

        return await self._engine.lookup(run)

    async def list_manifests(
        self, namespace: str, handler_id: str, *, after: tuple[int, str] | None, limit: int
    ) -> list[HandlerManifestRecord]:
        parameters: dict[str, object] = {"namespace": namespace, "handler_id": handler_id, "limit": limit}
        statement = _LIST_ALL_MANIFESTS
        if after is not None:
            seconds, nanos = divmod(after[0], _NANOS)
            parameters.update(seconds=seconds, nanos=nanos, version=after[1])
            statement = _LIST_MANIFESTS

        def run(connection: sqlite3.Connection) -> list[HandlerManifestRecord]:
            return [_manifest(row) for row in connection.execute(statement, parameters)]

        return await self._engine.read(run)

    async def put_transformer(self, namespace: str, transformer: TransformerRecord) -> None:
        parameters = {
            "namespace": namespace,
            "id": transformer.id,
            "handler_id": transformer.handler_id,
            "from_version": transformer.from_version,
            "to_version": transformer.to_version,
            "document": _dump(transformer.document),
        }
        await self._engine.write(lambda connection: connection.execute(_PUT_TRANSFORMER, parameters))

    async def get_transformer(self, namespace: str, transformer_id: str) -> TransformerRecord | None:
        parameters = {"namespace": namespace, "id": transformer_id}

        def run(connection: sqlite3.Connection) -> TransformerRecord | None:
            row = connection.execute(_GET_TRANSFORMER, parameters).fetchone()
            return None if row is None else _transformer(row)

        return await self._engine.lookup(run)

    async def transformers_between(
        self, namespace: str, handler_id: str, from_version: str, to_version: str
    ) -> list[TransformerRecord]:
        parameters = {
            "namespace": namespace,
            "handler_id": handler_id,
            "from_version": from_version,
            "to_version": to_version,
        }

        def run(connection: sqlite3.Connection) -> list[TransformerRecord]:
            return [_transformer(row) for row in connection.execute(_TRANSFORMERS_BETWEEN, parameters)]

        return await self._engine.lookup(run)

    async def put_document(
        self, namespace: str, kind: ManifestDocumentKind, key: DocumentKey, document: JsonObject
    ) -> None:
        parameters = {
            "namespace": namespace,
            "kind": kind.value,
            "id": key[0],
            "version": key[1],
            "document": _dump(document),
        }
        await self._engine.write(lambda connection: connection.execute(_PUT_DOCUMENT, parameters))

    async def get_document(
        self, namespace: str, kind: ManifestDocumentKind, key: DocumentKey
    ) -> JsonObject | None:
        parameters = {"namespace": namespace, "kind": kind.value, "id": key[0], "version": key[1]}

        def run(connection: sqlite3.Connection) -> JsonObject | None:
            row = connection.execute(_GET_DOCUMENT, parameters).fetchone()
            return None if row is None else _load(row[0])

        return await self._engine.lookup(run)

    async def list_documents(
        self, namespace: str, kind: ManifestDocumentKind, *, after: DocumentKey | None, limit: int
    ) -> list[tuple[DocumentKey, JsonObject]]:
        low = after or ("", "")  # every stored id is non-empty, so ("", "") is below them all
        parameters = {
            "namespace": namespace,
            "kind": kind.value,
            "id": low[0],
            "version": low[1],
            "limit": limit,
        }

        def run(connection: sqlite3.Connection) -> list[tuple[DocumentKey, JsonObject]]:
            rows = connection.execute(_LIST_DOCUMENTS, parameters)
            return [((row_id, version), _load(document)) for row_id, version, document in rows]

        return await self._engine.read(run)

    async def clear(self, namespace: str) -> None:
        parameters = {"namespace": namespace}

        def run(connection: sqlite3.Connection) -> None:
            for statement in _CLEAR:
                connection.execute(statement, parameters)

        await self._engine.write(run)

    async def stats(self, namespace: str) -> ManifestStats:
        parameters = {
            "namespace": namespace,
            "hooks": ManifestDocumentKind.HOOK_MANIFEST.value,
            "gtypes": ManifestDocumentKind.GTYPE.value,
            "graphs": ManifestDocumentKind.VERSION_GRAPH.value,
            "timescape": ManifestDocumentKind.TIMESCAPE_METADATA.value,
        }

        def run(connection: sqlite3.Connection) -> ManifestStats:
            manifests, transformers, hooks, gtypes, graphs, timescape = connection.execute(
                _STATS, parameters
            ).fetchone()
            return ManifestStats(
                manifests=manifests,
                hook_manifests=hooks,
                gtypes=gtypes,
                transformers=transformers,
                version_graphs=graphs,
                timescape_metadata=timescape,
            )

        return await self._engine.read(run)


def _load(text: str) -> JsonObject:
    document: JsonObject = json.loads(text)
    return document


MANIFEST_ROWS = Rows(_MANIFEST_COLUMNS, _manifest)
"""How export reads the handler_manifests table (after its namespace column)."""

TRANSFORMER_ROWS = Rows(_TRANSFORMER_COLUMNS, _transformer)
"""How export reads the manifest_transformers table (after its namespace column)."""

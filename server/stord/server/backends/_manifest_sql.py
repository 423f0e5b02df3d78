"""The manifest store (DESIGN 4.6) over the SQL tables of both dialects, written once over an `SqlRunner`.

created_at is split into whole seconds and nanoseconds, so every instant a protobuf Timestamp can hold orders
exactly (timestamptz keeps only microseconds; nanoseconds alone would overflow 64 bits before 2262).
"""

from __future__ import annotations

from stord.server.backends._sql import Row, SqlDialect, SqlRunner
from stord.server.backends.tables import HANDLER_MANIFESTS, MANIFEST_TRANSFORMERS, Rows
from stord.server.manifests.port import (
    DocumentKey,
    HandlerManifestRecord,
    ManifestDocumentKind,
    ManifestStats,
    TransformerRecord,
)
from stord.server.ports import Clock, JsonObject

__all__ = ["SqlManifestStore", "manifest_rows", "transformer_rows"]

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


def manifest_rows(dialect: SqlDialect) -> Rows[HandlerManifestRecord]:
    """Return how `dialect` reads handler_manifests rows (after the namespace column)."""

    def read(row: Row) -> HandlerManifestRecord:
        handler_id, version, seconds, nanos, document = row
        return HandlerManifestRecord(
            handler_id, version, seconds * _NANOS + nanos, dialect.load_json(document)
        )

    return Rows(_MANIFEST_COLUMNS, read)


def transformer_rows(dialect: SqlDialect) -> Rows[TransformerRecord]:
    """Return how `dialect` reads manifest_transformers rows (after the namespace column)."""

    def read(row: Row) -> TransformerRecord:
        transformer_id, handler_id, from_version, to_version, document = row
        return TransformerRecord(
            transformer_id, handler_id, from_version, to_version, dialect.load_json(document)
        )

    return Rows(_TRANSFORMER_COLUMNS, read)


class SqlManifestStore:
    """Manifests in three tables, one statement per operation (Clear: one transaction)."""

    def __init__(self, runner: SqlRunner, dialect: SqlDialect, clock: Clock) -> None:
        self._run = runner
        self._dialect = dialect
        self._sql = dialect.sql
        self._clock = clock
        self._manifest = manifest_rows(dialect).read
        self._transformer = transformer_rows(dialect).read

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
            "document": self._dialect.dump_json(document),
        }
        await self._run.write([(self._sql(_PUT_MANIFEST), parameters)])
        return created_at

    async def get_manifest(
        self, namespace: str, handler_id: str, version: str | None
    ) -> HandlerManifestRecord | None:
        parameters = {"namespace": namespace, "handler_id": handler_id, "version": version}
        statement = _LATEST_MANIFEST if version is None else _GET_MANIFEST
        row = await self._run.one(self._sql(statement), parameters)
        return None if row is None else self._manifest(row)

    async def list_manifests(
        self, namespace: str, handler_id: str, *, after: tuple[int, str] | None, limit: int
    ) -> list[HandlerManifestRecord]:
        parameters: dict[str, object] = {"namespace": namespace, "handler_id": handler_id, "limit": limit}
        statement = _LIST_ALL_MANIFESTS
        if after is not None:
            seconds, nanos = divmod(after[0], _NANOS)
            parameters.update(seconds=seconds, nanos=nanos, version=after[1])
            statement = _LIST_MANIFESTS
        return [self._manifest(row) for row in await self._run.all(self._sql(statement), parameters)]

    async def put_transformer(self, namespace: str, transformer: TransformerRecord) -> None:
        parameters = {
            "namespace": namespace,
            "id": transformer.id,
            "handler_id": transformer.handler_id,
            "from_version": transformer.from_version,
            "to_version": transformer.to_version,
            "document": self._dialect.dump_json(transformer.document),
        }
        await self._run.write([(self._sql(_PUT_TRANSFORMER), parameters)])

    async def get_transformer(self, namespace: str, transformer_id: str) -> TransformerRecord | None:
        row = await self._run.one(self._sql(_GET_TRANSFORMER), {"namespace": namespace, "id": transformer_id})
        return None if row is None else self._transformer(row)

    async def transformers_between(
        self, namespace: str, handler_id: str, from_version: str, to_version: str
    ) -> list[TransformerRecord]:
        parameters = {
            "namespace": namespace,
            "handler_id": handler_id,
            "from_version": from_version,
            "to_version": to_version,
        }
        rows = await self._run.all(self._sql(_TRANSFORMERS_BETWEEN), parameters, bounded=True)
        return [self._transformer(row) for row in rows]

    async def put_document(
        self, namespace: str, kind: ManifestDocumentKind, key: DocumentKey, document: JsonObject
    ) -> None:
        parameters = {
            "namespace": namespace,
            "kind": kind.value,
            "id": key[0],
            "version": key[1],
            "document": self._dialect.dump_json(document),
        }
        await self._run.write([(self._sql(_PUT_DOCUMENT), parameters)])

    async def get_document(
        self, namespace: str, kind: ManifestDocumentKind, key: DocumentKey
    ) -> JsonObject | None:
        parameters = {"namespace": namespace, "kind": kind.value, "id": key[0], "version": key[1]}
        row = await self._run.one(self._sql(_GET_DOCUMENT), parameters)
        return None if row is None else self._dialect.load_json(row[0])

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
        rows = await self._run.all(self._sql(_LIST_DOCUMENTS), parameters)
        return [((row_id, version), self._dialect.load_json(document)) for row_id, version, document in rows]

    async def clear(self, namespace: str) -> None:
        await self._run.write([(self._sql(statement), {"namespace": namespace}) for statement in _CLEAR])

    async def stats(self, namespace: str) -> ManifestStats:
        parameters = {
            "namespace": namespace,
            "hooks": ManifestDocumentKind.HOOK_MANIFEST.value,
            "gtypes": ManifestDocumentKind.GTYPE.value,
            "graphs": ManifestDocumentKind.VERSION_GRAPH.value,
            "timescape": ManifestDocumentKind.TIMESCAPE_METADATA.value,
        }
        row = await self._run.one(self._sql(_STATS), parameters)
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

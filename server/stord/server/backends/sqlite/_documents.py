"""The document contract (DESIGN 4.2) over the documents table of migrations/sqlite/0003_documents_jobs.sql.

Filters and sorts follow the typing rules of documents/rules.py with json_type(), which tells a field's
JSON type ('null', 'true', 'false', 'integer', 'real', 'text', 'array', 'object', NULL when missing), and
json_extract(), which reads its value. Values are always bound as parameters. A field's JSON path, however, is
written into the SQL text as a quoted literal: SQLite uses an index on an expression (CreateIndex) only when
the query repeats the indexed expression exactly, which a bound parameter never does. A path is made only of
keys that match FIELD_KEY (letters, digits, `_`, `-`), checked again here, so it can hold no quote.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from stord.server.backends.sqlite._engine import SqliteEngine
from stord.server.backends.sqlite._jobs import insert_jobs
from stord.server.backends.tables import DOCUMENTS, Rows
from stord.server.documents.port import (
    CreateDocument,
    DeleteDocument,
    Document,
    DocumentOperation,
    DocumentQuery,
    FieldFilter,
    FieldPath,
    FilterOperator,
    JsonScalar,
    OperationResult,
    SortKey,
    UpdateDocument,
)
from stord.server.documents.rules import (
    FIELD_KEY,
    already_exists,
    check_revision,
    index_name,
    merge,
    operation_context,
)
from stord.server.jobs.port import NewJob, micros
from stord.server.jobs.rules import QueueWakeups
from stord.server.ports import Clock

__all__ = ["SqliteDocumentStore"]

_COLUMNS = DOCUMENTS.names()
_KEY = "namespace = :namespace AND collection = :collection AND id = :id"

_INSERT = """
INSERT INTO documents (namespace, collection, id, revision, create_time, update_time, data)
VALUES (:namespace, :collection, :id, 1, :now, :now, :data)
ON CONFLICT (namespace, collection, id) DO NOTHING
"""
_SELECT = f"SELECT {_COLUMNS} FROM documents WHERE {_KEY}"
_UPDATE = f"UPDATE documents SET revision = :revision, update_time = :now, data = :data WHERE {_KEY}"
_REVISION = f"SELECT revision FROM documents WHERE {_KEY}"
_DELETE = f"DELETE FROM documents WHERE {_KEY}"

_NUMBER = "('integer', 'real')"
_COMPARISONS = {
    FilterOperator.GT: ">",
    FilterOperator.GTE: ">=",
    FilterOperator.LT: "<",
    FilterOperator.LTE: "<=",
}
_SORT_RANK = """CASE {kind} WHEN 'false' THEN 1 WHEN 'true' THEN 2 WHEN 'integer' THEN 3 WHEN 'real' THEN 3
    WHEN 'text' THEN 4 WHEN 'array' THEN 5 WHEN 'object' THEN 5 ELSE 0 END"""


def _quoted(text: str) -> str:
    """Return an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def json_path(path: FieldPath) -> str:
    """Return the SQL literal of a field's JSON path, such as '$."owner"."name"'."""
    if not path or not all(FIELD_KEY.fullmatch(key) for key in path):
        raise ValueError(f"not a valid field path: {path!r}")
    return _quoted("$" + "".join(f'."{key}"' for key in path))


class _Parameters:
    """The values a query binds, named p0, p1, ..."""

    def __init__(self, **fixed: object) -> None:
        self.values: dict[str, object] = dict(fixed)

    def bind(self, value: object) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f":{name}"


def _equals(parameters: _Parameters, extract: str, kind: str, value: JsonScalar) -> str:
    """Return the SQL of 'the field has the value's JSON type and equals it', the value bounding an index."""
    if value is None:
        return f"({extract} IS NULL AND {kind} = 'null')"
    if isinstance(value, bool):  # json_extract reads true as 1 and false as 0
        return f"({extract} = {int(value)} AND {kind} = '{'true' if value else 'false'}')"
    if isinstance(value, str):
        return f"({extract} = {parameters.bind(value)} AND {kind} = 'text')"
    return f"({extract} = {parameters.bind(value)} AND {kind} IN {_NUMBER})"


def _condition(parameters: _Parameters, condition: FieldFilter) -> str:
    path = json_path(condition.path)
    extract, kind = f"json_extract(data, {path})", f"json_type(data, {path})"
    value = condition.value
    if condition.operator is FilterOperator.IN:
        assert isinstance(value, tuple)
        return "(" + " OR ".join(_equals(parameters, extract, kind, item) for item in value) + ")"
    assert not isinstance(value, tuple)
    if condition.operator is FilterOperator.EQ:
        return _equals(parameters, extract, kind, value)
    if condition.operator is FilterOperator.NE:
        return f"NOT COALESCE({_equals(parameters, extract, kind, value)}, 0)"
    comparison = f"{extract} {_COMPARISONS[condition.operator]} {parameters.bind(value)}"
    # SQLite orders every number below every text: '' bounds the index scan to the value's own type.
    if isinstance(value, str):
        return f"({comparison} AND {extract} >= '' AND {kind} = 'text')"
    return f"({comparison} AND {extract} < '' AND {kind} IN {_NUMBER})"


def _sort_terms(key: SortKey) -> list[str]:
    """Return the ORDER BY terms of one key: the type's rank, then the value within numbers or strings."""
    path = json_path(key.path)
    kind = f"json_type(data, {path})"
    direction = "DESC" if key.descending else "ASC"
    value = f"CASE WHEN {kind} IN ('integer', 'real', 'text') THEN json_extract(data, {path}) END"
    return [f"{_SORT_RANK.format(kind=kind)} {direction}", f"{value} {direction}"]


def _where(parameters: _Parameters, filters: Sequence[FieldFilter]) -> str:
    conditions = ["namespace = :namespace", "collection = :collection"]
    conditions += [_condition(parameters, condition) for condition in filters]
    return " AND ".join(conditions)


def _document(row: Sequence[Any]) -> Document:
    return Document(row[0], row[1], row[2], row[3], row[4], orjson.loads(row[5]))


def _dump(data: object) -> str:
    return orjson.dumps(data).decode()


def _create(
    connection: sqlite3.Connection, namespace: str, operation: CreateDocument, now: float
) -> Document:
    key = {"namespace": namespace, "collection": operation.collection, "id": operation.id}
    if connection.execute(_INSERT, {**key, "now": now, "data": _dump(operation.data)}).rowcount == 0:
        raise already_exists(operation.collection, operation.id)
    return Document(operation.collection, operation.id, 1, now, now, operation.data)


def _update(
    connection: sqlite3.Connection, namespace: str, operation: UpdateDocument, now: float
) -> Document:
    key = {"namespace": namespace, "collection": operation.collection, "id": operation.id}
    row = connection.execute(_SELECT, key).fetchone()
    check_revision(
        operation.collection, operation.id, None if row is None else row[2], operation.expected_revision
    )
    stored = _document(row)
    data = merge(stored.data, operation.data)
    connection.execute(_UPDATE, {**key, "revision": stored.revision + 1, "now": now, "data": _dump(data)})
    return Document(stored.collection, stored.id, stored.revision + 1, stored.create_time, now, data)


def _delete(connection: sqlite3.Connection, namespace: str, operation: DeleteDocument) -> None:
    key = {"namespace": namespace, "collection": operation.collection, "id": operation.id}
    row = connection.execute(_REVISION, key).fetchone()
    check_revision(
        operation.collection, operation.id, None if row is None else row[0], operation.expected_revision
    )
    connection.execute(_DELETE, key)


def _apply(
    connection: sqlite3.Connection, namespace: str, operation: DocumentOperation, now: float
) -> OperationResult:
    if isinstance(operation, CreateDocument):
        return _create(connection, namespace, operation, now)
    if isinstance(operation, UpdateDocument):
        return _update(connection, namespace, operation, now)
    if isinstance(operation, DeleteDocument):
        _delete(connection, namespace, operation)
        return None
    (enqueued,) = insert_jobs(connection, namespace, [operation], micros(now))
    return enqueued


class SqliteDocumentStore:
    """Documents as JSON text; writes on the engine's writer thread, queries on its readers."""

    def __init__(self, engine: SqliteEngine, clock: Clock, wakeups: QueueWakeups) -> None:
        self._engine = engine
        self._clock = clock
        self._wakeups = wakeups

    async def create(self, namespace: str, operation: CreateDocument) -> Document:
        now = self._clock()
        return await self._engine.write(lambda connection: _create(connection, namespace, operation, now))

    async def get(self, namespace: str, collection: str, document_id: str) -> Document | None:
        key = {"namespace": namespace, "collection": collection, "id": document_id}

        def run(connection: sqlite3.Connection) -> Document | None:
            row = connection.execute(_SELECT, key).fetchone()
            return None if row is None else _document(row)

        return await self._engine.lookup(run)

    async def find(self, namespace: str, query: DocumentQuery) -> list[Document]:
        parameters = _Parameters(
            namespace=namespace, collection=query.collection, limit=query.limit, offset=query.offset
        )
        order = [term for key in query.order_by for term in _sort_terms(key)]
        sql = (
            f"SELECT {_COLUMNS} FROM documents WHERE {_where(parameters, query.filters)}"
            f" ORDER BY {', '.join([*order, 'id'])} LIMIT :limit OFFSET :offset"
        )

        def run(connection: sqlite3.Connection) -> list[Document]:
            return [_document(row) for row in connection.execute(sql, parameters.values)]

        return await self._engine.read(run)

    async def count(self, namespace: str, collection: str, filters: Sequence[FieldFilter]) -> int:
        parameters = _Parameters(namespace=namespace, collection=collection)
        sql = f"SELECT count(*) FROM documents WHERE {_where(parameters, filters)}"

        def run(connection: sqlite3.Connection) -> int:
            return int(connection.execute(sql, parameters.values).fetchone()[0])

        return await self._engine.read(run)

    async def update(self, namespace: str, operation: UpdateDocument) -> Document:
        now = self._clock()
        return await self._engine.write(lambda connection: _update(connection, namespace, operation, now))

    async def delete(self, namespace: str, operation: DeleteDocument) -> None:
        await self._engine.write(lambda connection: _delete(connection, namespace, operation))

    async def transact(
        self, namespace: str, operations: Sequence[DocumentOperation]
    ) -> list[OperationResult]:
        now = self._clock()

        def run(connection: sqlite3.Connection) -> list[OperationResult]:
            # One write: when an operation raises, the engine rolls the write's savepoint back, all of it.
            results: list[OperationResult] = []
            for index, operation in enumerate(operations):
                with operation_context(index):
                    results.append(_apply(connection, namespace, operation, now))
            return results

        results = await self._engine.write(run)
        queues = [operation.queue for operation in operations if isinstance(operation, NewJob)]
        self._wakeups.notify_queues(namespace, queues)
        return results

    async def create_index(self, collection: str, path: FieldPath) -> None:
        # A partial index per collection, led by namespace as every query is; the field's expression is the
        # one _condition writes, so filters on it can search the index.
        sql = (
            f"CREATE INDEX IF NOT EXISTS {index_name(collection, path)}"
            f" ON documents (namespace, json_extract(data, {json_path(path)}))"
            f" WHERE collection = {_quoted(collection)}"
        )

        def run(connection: sqlite3.Connection) -> None:
            connection.execute(sql)
            # Without statistics the planner prefers walking the unique index in id order (no sort) to the
            # new index, and scans the collection; ANALYZE reads only the indexes (16 ms for 100,000 rows).
            connection.execute("ANALYZE documents")

        await self._engine.write(run)


DOCUMENT_ROWS = Rows(_COLUMNS, _document)
"""How export reads the documents table (after its namespace column)."""

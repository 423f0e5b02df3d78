"""The document contract (DESIGN 4.2) over the documents table of migrations/postgres/0003_documents_jobs.sql.

Filters and sorts follow the typing rules of documents/rules.py with jsonb: `data #> path` reads a field
(NULL when missing), jsonb_typeof() tells its type, and jsonb equality and ordering compare values of one type
(numbers numerically). Strings compare as text with COLLATE "C", by code point, whatever the database's
locale. Paths and values are bound parameters. Queries run unprepared, so PostgreSQL plans them with the
parameters' values, which is what lets it match `data #> '{path}'` to a CreateIndex expression index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from psycopg import sql

from stord.server.backends.postgres._jobs import at, insert_jobs
from stord.server.backends.postgres._pool import Connection, Pool
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
    OperationResult,
    SortKey,
    UpdateDocument,
)
from stord.server.documents.rules import (
    already_exists,
    check_revision,
    index_name,
    operation_context,
)
from stord.server.jobs.port import NewJob, micros
from stord.server.jobs.rules import QueueWakeups
from stord.server.ports import Clock, Conflict

__all__ = ["PostgresDocumentStore"]

_COLUMNS = DOCUMENTS.names(cast={"data": "::text"})
_KEY = "namespace = %(namespace)s AND collection = %(collection)s AND id = %(id)s"

_INSERT = f"""
INSERT INTO documents (namespace, collection, id, revision, create_time, update_time, data)
VALUES (%(namespace)s, %(collection)s, %(id)s, 1, %(now)s, %(now)s, %(data)s::jsonb)
ON CONFLICT (namespace, collection, id) DO NOTHING
RETURNING {_COLUMNS}
"""

# jsonb || jsonb on two objects is the shallow merge: the right object's top-level fields win.
_UPDATE = f"""
UPDATE documents SET data = data || %(data)s::jsonb, revision = revision + 1, update_time = %(now)s
WHERE {_KEY} AND (%(expected)s::bigint IS NULL OR revision = %(expected)s::bigint)
RETURNING {_COLUMNS}
"""

_DELETE = f"""
DELETE FROM documents
WHERE {_KEY} AND (%(expected)s::bigint IS NULL OR revision = %(expected)s::bigint)
RETURNING revision
"""

_REVISION = f"SELECT revision FROM documents WHERE {_KEY}"
_SELECT = f"SELECT {_COLUMNS} FROM documents WHERE {_KEY}"

_COMPARISONS = {
    FilterOperator.GT: ">",
    FilterOperator.GTE: ">=",
    FilterOperator.LT: "<",
    FilterOperator.LTE: "<=",
}


class _Parameters:
    """The values a query binds, named p0, p1, ..."""

    def __init__(self, **fixed: object) -> None:
        self.values: dict[str, object] = dict(fixed)

    def bind(self, value: object) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"%({name})s"


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _condition(parameters: _Parameters, condition: FieldFilter) -> str:
    path = parameters.bind(list(condition.path))
    field = f"(data #> {path}::text[])"
    value = condition.value
    if condition.operator is FilterOperator.IN:
        assert isinstance(value, tuple)
        return f"{field} = ANY({parameters.bind([_json(item) for item in value])}::jsonb[])"
    assert not isinstance(value, tuple)
    if condition.operator is FilterOperator.EQ:
        return (
            f"{field} = {parameters.bind(_json(value))}::jsonb"  # jsonb equality is typed: 1 = 1.0, 1 <> "1"
        )
    if condition.operator is FilterOperator.NE:
        return f"({field} = {parameters.bind(_json(value))}::jsonb) IS NOT TRUE"
    comparison = _COMPARISONS[condition.operator]
    if isinstance(value, str):
        text = f'(data #>> {path}::text[]) COLLATE "C"'
        return f"(jsonb_typeof({field}) = 'string' AND {text} {comparison} {parameters.bind(value)})"
    return (
        f"(jsonb_typeof({field}) = 'number' AND {field} {comparison} {parameters.bind(_json(value))}::jsonb)"
    )


def _sort_terms(parameters: _Parameters, key: SortKey) -> list[str]:
    """Return the ORDER BY terms of one key: the type's rank, then the number, then the string."""
    path = parameters.bind(list(key.path))
    field = f"(data #> {path}::text[])"
    kind = f"jsonb_typeof({field})"
    direction = "DESC" if key.descending else "ASC"
    rank = (
        f"CASE {kind} WHEN 'boolean' THEN (CASE WHEN {field} = 'true'::jsonb THEN 2 ELSE 1 END)"
        f" WHEN 'number' THEN 3 WHEN 'string' THEN 4 WHEN 'array' THEN 5 WHEN 'object' THEN 5 ELSE 0 END"
    )
    number = f"CASE WHEN {kind} = 'number' THEN {field} END"
    text = f"CASE WHEN {kind} = 'string' THEN (data #>> {path}::text[]) COLLATE \"C\" END"
    return [f"{rank} {direction}", f"{number} {direction}", f"{text} {direction}"]


def _where(parameters: _Parameters, filters: Sequence[FieldFilter]) -> str:
    conditions = ["namespace = %(namespace)s", "collection = %(collection)s"]
    conditions += [_condition(parameters, condition) for condition in filters]
    return " AND ".join(conditions)


def _document(row: Sequence[Any]) -> Document:
    return Document(row[0], row[1], row[2], row[3].timestamp(), row[4].timestamp(), orjson.loads(row[5]))


def _key(namespace: str, collection: str, document_id: str) -> dict[str, Any]:
    return {"namespace": namespace, "collection": collection, "id": document_id}


async def _missed(connection: Connection, key: dict[str, Any], expected: int | None) -> Conflict:
    """Explain why a conditional write touched no row: raise NotFound or Conflict."""
    row = await (await connection.execute(_REVISION, key)).fetchone()
    check_revision(key["collection"], key["id"], None if row is None else row[0], expected)
    return Conflict(
        f"document {key['id']!r} in collection {key['collection']!r} changed meanwhile; try again"
    )


async def _create(connection: Connection, namespace: str, operation: CreateDocument, now: float) -> Document:
    parameters = {
        **_key(namespace, operation.collection, operation.id),
        "now": at(now),
        "data": _json(operation.data),
    }
    row = await (await connection.execute(_INSERT, parameters)).fetchone()
    if row is None:
        raise already_exists(operation.collection, operation.id)
    return _document(row)


async def _update(connection: Connection, namespace: str, operation: UpdateDocument, now: float) -> Document:
    key = _key(namespace, operation.collection, operation.id)
    parameters = {
        **key,
        "now": at(now),
        "data": _json(operation.data),
        "expected": operation.expected_revision,
    }
    row = await (await connection.execute(_UPDATE, parameters)).fetchone()
    if row is None:
        raise await _missed(connection, key, operation.expected_revision)
    return _document(row)


async def _delete(connection: Connection, namespace: str, operation: DeleteDocument) -> None:
    key = _key(namespace, operation.collection, operation.id)
    parameters = {**key, "expected": operation.expected_revision}
    if await (await connection.execute(_DELETE, parameters)).fetchone() is None:
        raise await _missed(connection, key, operation.expected_revision)


async def _apply(
    connection: Connection, namespace: str, operation: DocumentOperation, now: float
) -> OperationResult:
    if isinstance(operation, CreateDocument):
        return await _create(connection, namespace, operation, now)
    if isinstance(operation, UpdateDocument):
        return await _update(connection, namespace, operation, now)
    if isinstance(operation, DeleteDocument):
        await _delete(connection, namespace, operation)
        return None
    (enqueued,) = await insert_jobs(connection, namespace, [operation], micros(now))
    return enqueued


class PostgresDocumentStore:
    """Documents as jsonb, shared by every daemon on the database."""

    def __init__(self, pool: Pool, clock: Clock, wakeups: QueueWakeups) -> None:
        self._pool = pool
        self._clock = clock
        self._wakeups = wakeups

    async def create(self, namespace: str, operation: CreateDocument) -> Document:
        async with self._pool.connection() as connection:
            return await _create(connection, namespace, operation, self._clock())

    async def get(self, namespace: str, collection: str, document_id: str) -> Document | None:
        async with self._pool.connection() as connection:
            row = await (
                await connection.execute(_SELECT, _key(namespace, collection, document_id))
            ).fetchone()
        return None if row is None else _document(row)

    async def find(self, namespace: str, query: DocumentQuery) -> list[Document]:
        parameters = _Parameters(
            namespace=namespace, collection=query.collection, limit=query.limit, offset=query.offset
        )
        where = _where(parameters, query.filters)
        order = [term for key in query.order_by for term in _sort_terms(parameters, key)]
        statement = (
            f"SELECT {_COLUMNS} FROM documents WHERE {where}"
            f" ORDER BY {', '.join([*order, 'id'])} LIMIT %(limit)s OFFSET %(offset)s"
        )
        async with self._pool.connection() as connection:
            cursor = await connection.execute(statement.encode(), parameters.values, prepare=False)
            rows = await cursor.fetchall()
        return [_document(row) for row in rows]

    async def count(self, namespace: str, collection: str, filters: Sequence[FieldFilter]) -> int:
        parameters = _Parameters(namespace=namespace, collection=collection)
        statement = f"SELECT count(*) FROM documents WHERE {_where(parameters, filters)}"
        async with self._pool.connection() as connection:
            cursor = await connection.execute(statement.encode(), parameters.values, prepare=False)
            row = await cursor.fetchone()
        assert row is not None
        count: int = row[0]
        return count

    async def update(self, namespace: str, operation: UpdateDocument) -> Document:
        async with self._pool.connection() as connection:
            return await _update(connection, namespace, operation, self._clock())

    async def delete(self, namespace: str, operation: DeleteDocument) -> None:
        async with self._pool.connection() as connection:
            await _delete(connection, namespace, operation)

    async def transact(
        self, namespace: str, operations: Sequence[DocumentOperation]
    ) -> list[OperationResult]:
        now = self._clock()
        results: list[OperationResult] = []
        # One transaction: an operation that raises leaves the block and rolls back every earlier one.
        async with self._pool.connection() as connection, connection.transaction():
            for index, operation in enumerate(operations):
                with operation_context(index):
                    results.append(await _apply(connection, namespace, operation, now))
        queues = [operation.queue for operation in operations if isinstance(operation, NewJob)]
        self._wakeups.notify_queues(namespace, queues)
        return results

    async def create_index(self, collection: str, path: FieldPath) -> None:
        # Two partial indexes per collection, led by namespace as every query is: the jsonb value serves
        # equality, IN and number ranges; the text under COLLATE "C" serves string ranges. DDL takes no
        # parameters, so the path and collection go in as quoted literals.
        name = index_name(collection, path)
        values = sql.SQL(
            "CREATE INDEX IF NOT EXISTS {name} ON documents (namespace, (data #> {path}))"
            " WHERE collection = {collection}"
        ).format(name=sql.Identifier(name), path=sql.Literal(list(path)), collection=sql.Literal(collection))
        texts = sql.SQL(
            'CREATE INDEX IF NOT EXISTS {name} ON documents (namespace, (data #>> {path}) COLLATE "C")'
            " WHERE collection = {collection}"
        ).format(
            name=sql.Identifier(f"{name}_text"),
            path=sql.Literal(list(path)),
            collection=sql.Literal(collection),
        )
        async with self._pool.connection() as connection:
            await connection.execute(values)
            await connection.execute(texts)


DOCUMENT_ROWS = Rows(_COLUMNS, _document)
"""How export reads the documents table (after its namespace column)."""

"""The document store contract (DESIGN 4.2); Transact also enqueues jobs (jobs.port)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from stord.server.jobs.port import EnqueuedJob, NewJob
from stord.server.ports._base import JsonObject

JsonScalar = None | bool | int | float | str
"""What a filter compares a field with."""

FieldPath = tuple[str, ...]
"""A field of a JSON object, as its chain of keys: `owner.name` is ("owner", "name"). Never an array index."""


class FilterOperator(enum.Enum):
    """How a filter compares a field with its value (see documents.proto for the typing rules)."""

    EQ = "eq"
    NE = "ne"
    IN = "in"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"


@dataclass(frozen=True, slots=True)
class FieldFilter:
    """One condition; a query's conditions are ANDed.

    `value` is a tuple of scalars for IN, a number or string for GT/GTE/LT/LTE, and a scalar otherwise.
    """

    path: FieldPath
    operator: FilterOperator
    value: JsonScalar | tuple[JsonScalar, ...]


@dataclass(frozen=True, slots=True)
class SortKey:
    """One sort key. Ascending: missing or null, false, true, numbers, strings, then arrays and objects."""

    path: FieldPath
    descending: bool = False


@dataclass(frozen=True, slots=True)
class DocumentQuery:
    """Which documents of a collection to list, in which order; ties on every key are ordered by id."""

    collection: str
    filters: tuple[FieldFilter, ...] = ()
    order_by: tuple[SortKey, ...] = ()
    offset: int = 0
    limit: int = 100


@dataclass(frozen=True, slots=True)
class Document:
    """A stored document; times in seconds since the epoch, by the daemon's clock."""

    collection: str
    id: str
    revision: int
    create_time: float
    update_time: float
    data: JsonObject


@dataclass(frozen=True, slots=True)
class CreateDocument:
    """Create a document; `id` is chosen by the caller (the servicer makes a UUID when the client did not)."""

    collection: str
    id: str
    data: JsonObject


@dataclass(frozen=True, slots=True)
class UpdateDocument:
    """Shallow-merge `data` into a document, if its revision is `expected_revision` (None: any)."""

    collection: str
    id: str
    data: JsonObject
    expected_revision: int | None = None


@dataclass(frozen=True, slots=True)
class DeleteDocument:
    """Delete a document, if its revision is `expected_revision` (None: any)."""

    collection: str
    id: str
    expected_revision: int | None = None


DocumentOperation = CreateDocument | UpdateDocument | DeleteDocument | NewJob
"""One step of a transaction."""

OperationResult = Document | EnqueuedJob | None
"""A step's outcome: the created or updated document, the enqueued job, None for a delete."""


class DocumentStore(Protocol):
    """JSON documents in collections, filtered and sorted by typed fields (DESIGN 4.2).

    Arguments arrive validated. Every backend decides filters and sort order by JSON type exactly as the
    memory backend does (numbers with numbers, strings with strings by code point, a type mismatch never
    matches), so a query gives the same answer everywhere.
    """

    async def create(self, namespace: str, operation: CreateDocument) -> Document:
        """Store a new document at revision 1; raise AlreadyExists when the id is taken."""
        ...

    async def get(self, namespace: str, collection: str, document_id: str) -> Document | None:
        """Return the document, or None."""
        ...

    async def find(self, namespace: str, query: DocumentQuery) -> list[Document]:
        """Return the matching documents in order, after skipping `query.offset`, at most `query.limit`."""
        ...

    async def count(self, namespace: str, collection: str, filters: Sequence[FieldFilter]) -> int:
        """Return how many documents of the collection match every filter."""
        ...

    async def update(self, namespace: str, operation: UpdateDocument) -> Document:
        """Merge and bump the revision; raise NotFound, or Conflict when the expected revision differs."""
        ...

    async def delete(self, namespace: str, operation: DeleteDocument) -> None:
        """Remove the document; raise NotFound, or Conflict when the expected revision differs."""
        ...

    async def transact(
        self, namespace: str, operations: Sequence[DocumentOperation]
    ) -> list[OperationResult]:
        """Apply every operation in order, or none; the first failure is re-raised as `operations[i]: ...`."""
        ...

    async def create_index(self, collection: str, path: FieldPath) -> None:
        """Make filters and sorts on `path` in `collection` (every namespace) use an index; idempotent."""
        ...

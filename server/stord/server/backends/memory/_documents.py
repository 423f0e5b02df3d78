from __future__ import annotations

from collections.abc import Sequence

from stord.server.backends.memory._jobs import MemoryJobQueueStore, Undo
from stord.server.documents.port import (
    CreateDocument,
    DeleteDocument,
    Document,
    DocumentOperation,
    DocumentQuery,
    FieldFilter,
    FieldPath,
    OperationResult,
    UpdateDocument,
)
from stord.server.documents.rules import (
    already_exists,
    check_revision,
    matches,
    merge,
    operation_context,
    sort_documents,
)
from stord.server.jobs.port import NewJob, micros
from stord.server.jobs.rules import QueueWakeups
from stord.server.ports import Clock

__all__ = ["MemoryDocumentStore"]

# Every method runs to completion without awaiting, so each is atomic on the event loop and needs no lock.
# A transaction records an undo step per change and runs them backwards when an operation fails.

_Collection = dict[str, Document]


class MemoryDocumentStore:
    """Documents in a dict per (namespace, collection); queries filter and sort them in Python."""

    def __init__(self, clock: Clock, jobs: MemoryJobQueueStore, wakeups: QueueWakeups) -> None:
        self._clock = clock
        self._jobs = jobs
        self._wakeups = wakeups
        self._collections: dict[tuple[str, str], _Collection] = {}

    def _collection(self, namespace: str, collection: str) -> _Collection:
        return self._collections.setdefault((namespace, collection), {})

    def _view(self, namespace: str, collection: str) -> _Collection:
        return self._collections.get((namespace, collection), {})

    def _create(self, namespace: str, operation: CreateDocument, now: float, undo: Undo) -> Document:
        documents = self._collection(namespace, operation.collection)
        if operation.id in documents:
            raise already_exists(operation.collection, operation.id)
        document = Document(operation.collection, operation.id, 1, now, now, operation.data)
        documents[document.id] = document
        undo.append(lambda: documents.__delitem__(document.id))
        return document

    def _update(self, namespace: str, operation: UpdateDocument, now: float, undo: Undo) -> Document:
        documents = self._view(namespace, operation.collection)
        stored = documents.get(operation.id)
        check_revision(
            operation.collection,
            operation.id,
            None if stored is None else stored.revision,
            operation.expected_revision,
        )
        assert stored is not None
        updated = Document(
            stored.collection,
            stored.id,
            stored.revision + 1,
            stored.create_time,
            now,
            merge(stored.data, operation.data),
        )
        documents[stored.id] = updated
        undo.append(lambda: documents.__setitem__(stored.id, stored))
        return updated

    def _delete(self, namespace: str, operation: DeleteDocument, undo: Undo) -> None:
        documents = self._view(namespace, operation.collection)
        stored = documents.get(operation.id)
        check_revision(
            operation.collection,
            operation.id,
            None if stored is None else stored.revision,
            operation.expected_revision,
        )
        assert stored is not None
        del documents[stored.id]
        undo.append(lambda: documents.__setitem__(stored.id, stored))

    def _apply(self, namespace: str, operation: DocumentOperation, now: float, undo: Undo) -> OperationResult:
        if isinstance(operation, CreateDocument):
            return self._create(namespace, operation, now, undo)
        if isinstance(operation, UpdateDocument):
            return self._update(namespace, operation, now, undo)
        if isinstance(operation, DeleteDocument):
            self._delete(namespace, operation, undo)
            return None
        return self._jobs.add(namespace, operation, micros(now), undo)

    def _matching(self, namespace: str, collection: str, filters: Sequence[FieldFilter]) -> list[Document]:
        return [
            document
            for document in self._view(namespace, collection).values()
            if all(matches(document.data, condition) for condition in filters)
        ]

    async def create(self, namespace: str, operation: CreateDocument) -> Document:
        return self._create(namespace, operation, self._clock(), [])

    async def get(self, namespace: str, collection: str, document_id: str) -> Document | None:
        return self._view(namespace, collection).get(document_id)

    async def find(self, namespace: str, query: DocumentQuery) -> list[Document]:
        found = sort_documents(self._matching(namespace, query.collection, query.filters), query.order_by)
        return found[query.offset : query.offset + query.limit]

    async def count(self, namespace: str, collection: str, filters: Sequence[FieldFilter]) -> int:
        return len(self._matching(namespace, collection, filters))

    async def update(self, namespace: str, operation: UpdateDocument) -> Document:
        return self._update(namespace, operation, self._clock(), [])

    async def delete(self, namespace: str, operation: DeleteDocument) -> None:
        self._delete(namespace, operation, [])

    async def transact(
        self, namespace: str, operations: Sequence[DocumentOperation]
    ) -> list[OperationResult]:
        now = self._clock()
        undo: Undo = []
        results: list[OperationResult] = []
        try:
            for index, operation in enumerate(operations):
                with operation_context(index):
                    results.append(self._apply(namespace, operation, now, undo))
        except BaseException:
            for step in reversed(undo):
                step()
            raise
        queues = [operation.queue for operation in operations if isinstance(operation, NewJob)]
        self._wakeups.notify_queues(namespace, queues)
        return results

    async def create_index(self, collection: str, path: FieldPath) -> None:
        """Do nothing: the memory backend has no indexes, and scans answer the same."""

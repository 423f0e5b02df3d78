"""DocumentService for both clients: `Documents` (blocking) and its twin `AsyncDocuments` (asyncio)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import grpc

from stord.client import _convert
from stord.client._models import Document, EnqueuedJob, Filter, TransactStep
from stord.v1 import documents_pb2 as pb
from stord.v1 import documents_pb2_grpc

if TYPE_CHECKING:
    from stord.client import _async, _sync

__all__ = ["AsyncDocuments", "Documents"]


StepResult = Document | EnqueuedJob | bool
"""What a transaction step returns: the created or updated Document, the EnqueuedJob, True for a delete."""


def _list_request(
    collection: str, where: Iterable[Filter], order_by: Iterable[str], page_size: int, offset: int = 0
) -> pb.ListDocumentsRequest:
    return pb.ListDocumentsRequest(
        collection=collection,
        filters=_convert.filters(where),
        order_by=_convert.order(order_by),
        page_size=page_size,
        offset=offset,
    )


def _update_request(
    collection: str, document_id: str, data: Mapping[str, Any], expected_revision: int | None
) -> pb.UpdateDocumentRequest:
    return pb.UpdateDocumentRequest(
        collection=collection,
        document_id=document_id,
        data=_convert.struct(data),
        expected_revision=expected_revision,
    )


class Documents:
    """DocumentService: JSON documents in collections. Reached as `Client.documents`.

    Filters are (field, operator, value) tuples, ANDed; sort keys are field paths, `-field` for descending.
    """

    def __init__(self, channel: grpc.Channel, call: _sync._Caller) -> None:
        self._stub = documents_pb2_grpc.DocumentServiceStub(channel)
        self._call = call

    def create(
        self, collection: str, data: Mapping[str, Any] | None = None, *, id: str | None = None
    ) -> Document:
        """Store a new document (the server makes a UUID when `id` is None); AlreadyExists when it exists."""
        request = pb.CreateDocumentRequest(
            collection=collection, document_id=id or "", data=_convert.struct(data)
        )
        return _convert.document(self._call(self._stub.CreateDocument, request).document)

    def get(self, collection: str, document_id: str) -> Document | None:
        """Return the document, None when there is none."""
        request = pb.GetDocumentRequest(collection=collection, document_id=document_id)
        response = self._call(self._stub.GetDocument, request)
        return _convert.document(response.document) if response.found else None

    def find(
        self,
        collection: str,
        *,
        where: Iterable[Filter] = (),
        order_by: Iterable[str] = (),
        limit: int = 0,
        offset: int = 0,
    ) -> list[Document]:
        """Return up to `limit` (0: 100, at most 1000) matching documents after skipping `offset`."""
        request = _list_request(collection, where, order_by, limit, offset)
        return [
            _convert.document(message) for message in self._call(self._stub.ListDocuments, request).documents
        ]

    def find_all(
        self,
        collection: str,
        *,
        where: Iterable[Filter] = (),
        order_by: Iterable[str] = (),
        page_size: int = 0,
    ) -> Iterator[Document]:
        """Yield every matching document in order, fetching pages as needed."""
        request = _list_request(collection, where, order_by, page_size)
        while True:
            response = self._call(self._stub.ListDocuments, request)
            for message in response.documents:
                yield _convert.document(message)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def count(self, collection: str, *, where: Iterable[Filter] = ()) -> int:
        """Return how many documents match every filter."""
        request = pb.CountDocumentsRequest(collection=collection, filters=_convert.filters(where))
        return self._call(self._stub.CountDocuments, request).count

    def update(
        self,
        collection: str,
        document_id: str,
        data: Mapping[str, Any],
        *,
        expected_revision: int | None = None,
    ) -> Document:
        """Merge top-level fields into a document; NotFound, or Conflict when the revision differs."""
        request = _update_request(collection, document_id, data, expected_revision)
        return _convert.document(self._call(self._stub.UpdateDocument, request).document)

    def delete(self, collection: str, document_id: str, *, expected_revision: int | None = None) -> None:
        """Remove a document; NotFound, or Conflict when the revision differs."""
        request = pb.DeleteDocumentRequest(
            collection=collection, document_id=document_id, expected_revision=expected_revision
        )
        self._call(self._stub.DeleteDocument, request)

    def transact(self, steps: Iterable[TransactStep]) -> list[StepResult]:
        """Apply every step in order, all or nothing; return each step's result."""
        request = pb.TransactRequest(operations=[_convert.operation(step) for step in steps])
        return [_convert.result(result) for result in self._call(self._stub.Transact, request).results]

    def create_index(self, collection: str, field: str) -> None:
        """Make filters on `field` of `collection` use an index (SQLite, PostgreSQL); idempotent."""
        self._call(self._stub.CreateIndex, pb.CreateIndexRequest(collection=collection, field=field))


class AsyncDocuments:
    """DocumentService: JSON documents in collections. Reached as `AsyncClient.documents`.

    Filters are (field, operator, value) tuples, ANDed; sort keys are field paths, `-field` for descending.
    """

    def __init__(self, channel: grpc.aio.Channel, call: _async._Caller) -> None:
        self._stub = documents_pb2_grpc.DocumentServiceStub(channel)
        self._call = call

    async def create(
        self, collection: str, data: Mapping[str, Any] | None = None, *, id: str | None = None
    ) -> Document:
        """Store a new document (the server makes a UUID when `id` is None); AlreadyExists when it exists."""
        request = pb.CreateDocumentRequest(
            collection=collection, document_id=id or "", data=_convert.struct(data)
        )
        return _convert.document((await self._call(self._stub.CreateDocument, request)).document)

    async def get(self, collection: str, document_id: str) -> Document | None:
        """Return the document, None when there is none."""
        request = pb.GetDocumentRequest(collection=collection, document_id=document_id)
        response = await self._call(self._stub.GetDocument, request)
        return _convert.document(response.document) if response.found else None

    async def find(
        self,
        collection: str,
        *,
        where: Iterable[Filter] = (),
        order_by: Iterable[str] = (),
        limit: int = 0,
        offset: int = 0,
    ) -> list[Document]:
        """Return up to `limit` (0: 100, at most 1000) matching documents after skipping `offset`."""
        request = _list_request(collection, where, order_by, limit, offset)
        response = await self._call(self._stub.ListDocuments, request)
        return [_convert.document(message) for message in response.documents]

    async def find_all(
        self,
        collection: str,
        *,
        where: Iterable[Filter] = (),
        order_by: Iterable[str] = (),
        page_size: int = 0,
    ) -> AsyncIterator[Document]:
        """Yield every matching document in order, fetching pages as needed."""
        request = _list_request(collection, where, order_by, page_size)
        while True:
            response = await self._call(self._stub.ListDocuments, request)
            for message in response.documents:
                yield _convert.document(message)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def count(self, collection: str, *, where: Iterable[Filter] = ()) -> int:
        """Return how many documents match every filter."""
        request = pb.CountDocumentsRequest(collection=collection, filters=_convert.filters(where))
        return (await self._call(self._stub.CountDocuments, request)).count

    async def update(
        self,
        collection: str,
        document_id: str,
        data: Mapping[str, Any],
        *,
        expected_revision: int | None = None,
    ) -> Document:
        """Merge top-level fields into a document; NotFound, or Conflict when the revision differs."""
        request = _update_request(collection, document_id, data, expected_revision)
        return _convert.document((await self._call(self._stub.UpdateDocument, request)).document)

    async def delete(
        self, collection: str, document_id: str, *, expected_revision: int | None = None
    ) -> None:
        """Remove a document; NotFound, or Conflict when the revision differs."""
        request = pb.DeleteDocumentRequest(
            collection=collection, document_id=document_id, expected_revision=expected_revision
        )
        await self._call(self._stub.DeleteDocument, request)

    async def transact(self, steps: Iterable[TransactStep]) -> list[StepResult]:
        """Apply every step in order, all or nothing; return each step's result."""
        request = pb.TransactRequest(operations=[_convert.operation(step) for step in steps])
        response = await self._call(self._stub.Transact, request)
        return [_convert.result(result) for result in response.results]

    async def create_index(self, collection: str, field: str) -> None:
        """Make filters on `field` of `collection` use an index (SQLite, PostgreSQL); idempotent."""
        await self._call(self._stub.CreateIndex, pb.CreateIndexRequest(collection=collection, field=field))

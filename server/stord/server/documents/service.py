"""DocumentService (DESIGN 4.2) over the DocumentStore port."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from stord.server.documents import fields
from stord.server.documents.port import (
    CreateDocument,
    DeleteDocument,
    Document,
    DocumentOperation,
    DocumentQuery,
    DocumentStore,
    FieldFilter,
    FilterOperator,
    JsonScalar,
    OperationResult,
    SortKey,
    UpdateDocument,
)
from stord.server.jobs.port import EnqueuedJob, now_micros
from stord.server.jobs.service import new_job
from stord.server.ports import Clock, InvalidArgument
from stord.server.rpc import calls
from stord.server.rpc import validate as check
from stord.server.rpc.page_tokens import PageTokens
from stord.v1 import documents_pb2 as pb
from stord.v1 import documents_pb2_grpc, jobs_pb2

__all__ = ["DocumentServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

MAX_FILTERS = 32
MAX_SORT_KEYS = 8
MAX_IN_VALUES = 100

_OPERATORS = {
    pb.FILTER_OPERATOR_EQ: FilterOperator.EQ,
    pb.FILTER_OPERATOR_NE: FilterOperator.NE,
    pb.FILTER_OPERATOR_IN: FilterOperator.IN,
    pb.FILTER_OPERATOR_GT: FilterOperator.GT,
    pb.FILTER_OPERATOR_GTE: FilterOperator.GTE,
    pb.FILTER_OPERATOR_LT: FilterOperator.LT,
    pb.FILTER_OPERATOR_LTE: FilterOperator.LTE,
}


def _filter_value(
    message: pb.DocumentFilter, operator: FilterOperator, field: str
) -> JsonScalar | tuple[JsonScalar, ...]:
    if not message.HasField("value"):
        raise InvalidArgument(field, "must be set")
    value = message.value
    if operator is FilterOperator.IN:
        if value.WhichOneof("kind") != "list_value" or not 1 <= len(value.list_value.values) <= MAX_IN_VALUES:
            raise InvalidArgument(
                field, f"must be a list of 1 to {MAX_IN_VALUES} values for FILTER_OPERATOR_IN"
            )
        return tuple(
            fields.scalar(item, f"{field}[{index}]") for index, item in enumerate(value.list_value.values)
        )
    scalar = fields.scalar(value, field)
    if operator not in (FilterOperator.EQ, FilterOperator.NE) and (
        scalar is None or isinstance(scalar, bool)
    ):
        raise InvalidArgument(field, "must be a number or a string for a range operator")
    return scalar


def _filters(messages: Sequence[pb.DocumentFilter]) -> tuple[FieldFilter, ...]:
    if len(messages) > MAX_FILTERS:
        raise InvalidArgument("filters", f"must hold at most {MAX_FILTERS} filters")
    filters: list[FieldFilter] = []
    for index, message in enumerate(messages):
        where = f"filters[{index}]"
        path = fields.field_path(message.field, f"{where}.field")
        operator = _OPERATORS.get(message.operator)
        if operator is None:
            raise InvalidArgument(
                f"{where}.operator", "must be a FilterOperator other than FILTER_OPERATOR_UNSPECIFIED"
            )
        filters.append(FieldFilter(path, operator, _filter_value(message, operator, f"{where}.value")))
    return tuple(filters)


def _order_by(messages: Sequence[pb.DocumentOrder]) -> tuple[SortKey, ...]:
    if len(messages) > MAX_SORT_KEYS:
        raise InvalidArgument("order_by", f"must hold at most {MAX_SORT_KEYS} sort keys")
    return tuple(
        SortKey(fields.field_path(message.field, f"order_by[{index}].field"), message.descending)
        for index, message in enumerate(messages)
    )


def _page_start(request: pb.ListDocumentsRequest, tokens: PageTokens) -> int:
    """Return how many matching documents precede the page: the offset, or the token's position."""
    if request.offset < 0:
        raise InvalidArgument("offset", "must not be negative")
    if request.offset and request.page_token:
        raise InvalidArgument("offset", "must be 0 with a page_token, which carries the position")
    position = tokens.resume(request, calls.namespace(), int)
    if position is None:
        return request.offset
    (start,) = position
    assert isinstance(start, int)
    if start < 0:
        raise InvalidArgument("page_token", "is not a token this server issued for this listing and query")
    return start


def _create(message: pb.CreateDocumentRequest, prefix: str = "") -> CreateDocument:
    return CreateDocument(
        collection=fields.name(message.collection, f"{prefix}collection"),
        id=check.identifier(message.document_id, f"{prefix}document_id")
        if message.document_id
        else fields.new_id(),
        data=fields.json_object(message.data, f"{prefix}data"),
    )


def _update(message: pb.UpdateDocumentRequest, prefix: str = "") -> UpdateDocument:
    return UpdateDocument(
        collection=fields.name(message.collection, f"{prefix}collection"),
        id=check.identifier(message.document_id, f"{prefix}document_id"),
        data=fields.json_object(message.data, f"{prefix}data"),
        expected_revision=message.expected_revision if message.HasField("expected_revision") else None,
    )


def _delete(message: pb.DeleteDocumentRequest, prefix: str = "") -> DeleteDocument:
    return DeleteDocument(
        collection=fields.name(message.collection, f"{prefix}collection"),
        id=check.identifier(message.document_id, f"{prefix}document_id"),
        expected_revision=message.expected_revision if message.HasField("expected_revision") else None,
    )


def _operation(message: pb.TransactOperation, field: str, now: int) -> DocumentOperation:
    kind = message.WhichOneof("operation")
    if kind == "create":
        return _create(message.create, f"{field}.create.")
    if kind == "update":
        return _update(message.update, f"{field}.update.")
    if kind == "delete":
        return _delete(message.delete, f"{field}.delete.")
    if kind == "enqueue":
        return new_job(message.enqueue, f"{field}.enqueue", now)
    raise InvalidArgument(field, "must set one of create, update, delete or enqueue")


def _document(document: Document) -> pb.Document:
    return pb.Document(
        collection=document.collection,
        id=document.id,
        revision=document.revision,
        create_time=check.timestamp_from_seconds(document.create_time),
        update_time=check.timestamp_from_seconds(document.update_time),
        data=fields.to_struct(document.data),
    )


def _result(result: OperationResult) -> pb.TransactResult:
    if result is None:
        return pb.TransactResult(deleted=True)
    if isinstance(result, EnqueuedJob):
        return pb.TransactResult(
            job=jobs_pb2.EnqueuedJob(job_id=result.job_id, deduplicated=result.deduplicated)
        )
    return pb.TransactResult(document=_document(result))


class DocumentServicer(documents_pb2_grpc.DocumentServiceServicer):
    """Documents: create, read, query, update, delete, transactions and indexes."""

    def __init__(self, store: DocumentStore, tokens: PageTokens, *, job_clock: Clock) -> None:
        self._store = store
        self._tokens = tokens
        self._job_clock = job_clock
        """The job queue's clock, which resolves the delay of a job a transaction enqueues."""

    async def CreateDocument(
        self, request: pb.CreateDocumentRequest, context: Context
    ) -> pb.CreateDocumentResponse:
        document = await self._store.create(calls.namespace(), _create(request))
        return pb.CreateDocumentResponse(document=_document(document))

    async def GetDocument(self, request: pb.GetDocumentRequest, context: Context) -> pb.GetDocumentResponse:
        collection = fields.name(request.collection, "collection")
        document_id = check.identifier(request.document_id, "document_id")
        document = await self._store.get(calls.namespace(), collection, document_id)
        if document is None:
            return pb.GetDocumentResponse()
        return pb.GetDocumentResponse(found=True, document=_document(document))

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: Context
    ) -> pb.ListDocumentsResponse:
        limit = check.page_size(request.page_size)
        start = _page_start(request, self._tokens)
        query = DocumentQuery(
            collection=fields.name(request.collection, "collection"),
            filters=_filters(request.filters),
            order_by=_order_by(request.order_by),
            offset=start,
            limit=limit + 1,  # one extra tells whether another page follows
        )
        documents = await self._store.find(calls.namespace(), query)
        token = ""
        if len(documents) > limit:
            documents = documents[:limit]
            token = self._tokens.issue(request, calls.namespace(), start + limit)
        return pb.ListDocumentsResponse(
            documents=[_document(document) for document in documents], next_page_token=token
        )

    async def CountDocuments(
        self, request: pb.CountDocumentsRequest, context: Context
    ) -> pb.CountDocumentsResponse:
        collection = fields.name(request.collection, "collection")
        count = await self._store.count(calls.namespace(), collection, _filters(request.filters))
        return pb.CountDocumentsResponse(count=count)

    async def UpdateDocument(
        self, request: pb.UpdateDocumentRequest, context: Context
    ) -> pb.UpdateDocumentResponse:
        document = await self._store.update(calls.namespace(), _update(request))
        return pb.UpdateDocumentResponse(document=_document(document))

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: Context
    ) -> pb.DeleteDocumentResponse:
        await self._store.delete(calls.namespace(), _delete(request))
        return pb.DeleteDocumentResponse()

    async def Transact(self, request: pb.TransactRequest, context: Context) -> pb.TransactResponse:
        now = now_micros(self._job_clock)
        operations = [
            _operation(message, f"operations[{index}]", now)
            for index, message in enumerate(check.batch(request.operations, "operations"))
        ]
        results = await self._store.transact(calls.namespace(), operations)
        return pb.TransactResponse(results=[_result(result) for result in results])

    async def CreateIndex(self, request: pb.CreateIndexRequest, context: Context) -> pb.CreateIndexResponse:
        collection = fields.name(request.collection, "collection")
        await self._store.create_index(collection, fields.field_path(request.field, "field"))
        return pb.CreateIndexResponse()

"""Documents: the DocumentService contract (JSON documents, filters, Transact).

`port` is the store Protocol, `service` the servicer, `fields` the request's field paths and JSON, `rules`
the typed comparison, sort order and merge every backend follows.
"""

from stord.server.documents.port import (
    CreateDocument,
    DeleteDocument,
    Document,
    DocumentOperation,
    DocumentQuery,
    DocumentStore,
    FieldFilter,
    FieldPath,
    FilterOperator,
    JsonScalar,
    OperationResult,
    SortKey,
    UpdateDocument,
)

__all__ = [
    "CreateDocument",
    "DeleteDocument",
    "Document",
    "DocumentOperation",
    "DocumentQuery",
    "DocumentStore",
    "FieldFilter",
    "FieldPath",
    "FilterOperator",
    "JsonScalar",
    "OperationResult",
    "SortKey",
    "UpdateDocument",
]

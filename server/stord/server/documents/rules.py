"""What every document backend decides the same way: typed comparison, sort order, merge, transact errors.

The memory backend runs these functions directly; the SQL backends express the same rules in SQL, and the
conformance suite holds them to the answers given here.
"""

from __future__ import annotations

import enum
import hashlib
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from stord.server.documents.port import Document, FieldFilter, FieldPath, FilterOperator, JsonScalar, SortKey
from stord.server.ports import AlreadyExists, Conflict, JsonObject, NotFound

__all__ = [
    "FIELD_KEY",
    "Missing",
    "already_exists",
    "check_revision",
    "field_value",
    "index_name",
    "matches",
    "merge",
    "operation_context",
    "sort_documents",
]

FIELD_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
"""One key of a field path. No quote, dot or bracket can occur, which lets SQL carry a path safely."""


class Missing(enum.Enum):
    """The value of a field path that leads nowhere."""

    MISSING = "missing"


def field_value(data: JsonObject, path: FieldPath) -> object:
    """Return the value at `path`, or Missing.MISSING when a key on the way is absent or not an object."""
    value: object = data
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return Missing.MISSING
        value = value[key]
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equals(value: object, expected: JsonScalar) -> bool:
    """Return whether a field equals a scalar of the same JSON type (1 equals 1.0, True is not 1)."""
    if expected is None:
        return value is None
    if isinstance(expected, bool):
        return value is expected
    if isinstance(expected, str):
        return isinstance(value, str) and value == expected
    return _is_number(value) and value == expected


_COMPARISONS: dict[FilterOperator, Callable[[Any, Any], bool]] = {
    FilterOperator.GT: operator.gt,
    FilterOperator.GTE: operator.ge,
    FilterOperator.LT: operator.lt,
    FilterOperator.LTE: operator.le,
}


def _compares(value: object, comparison: FilterOperator, bound: JsonScalar) -> bool:
    """Return whether a number or string field stands in `comparison` to a bound of the same type."""
    same_type = isinstance(value, str) if isinstance(bound, str) else _is_number(value)
    return same_type and _COMPARISONS[comparison](value, bound)


def matches(data: JsonObject, condition: FieldFilter) -> bool:
    """Return whether a document's data meets one filter, by the typing rules of documents.proto."""
    value = field_value(data, condition.path)
    expected = condition.value
    if condition.operator is FilterOperator.IN:
        assert isinstance(expected, tuple)
        return any(_equals(value, item) for item in expected)
    assert not isinstance(expected, tuple)
    if condition.operator is FilterOperator.EQ:
        return _equals(value, expected)
    if condition.operator is FilterOperator.NE:
        return not _equals(value, expected)
    return _compares(value, condition.operator, expected)


def _sort_rank(value: object) -> tuple[int, int | float | str]:
    """Rank a field for sorting: missing or null, false, true, numbers, strings, then arrays and objects."""
    if value is Missing.MISSING or value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (2, 0) if value else (1, 0)
    if isinstance(value, int | float):
        return (3, value)
    if isinstance(value, str):
        return (4, value)
    return (5, 0)


def sort_documents(documents: Iterable[Document], order_by: Iterable[SortKey]) -> list[Document]:
    """Sort by the keys, most significant first, and by id where they all tie."""
    ordered = sorted(documents, key=lambda document: document.id)
    # Stable sorts from the least significant key up; `reverse` keeps ties in their order.
    for key in reversed(list(order_by)):
        ordered.sort(
            key=lambda document: _sort_rank(field_value(document.data, key.path)), reverse=key.descending
        )
    return ordered


def merge(data: JsonObject, patch: JsonObject) -> JsonObject:
    """Shallow-merge: each top-level field of `patch` replaces the stored one."""
    return {**data, **patch}


def check_revision(collection: str, document_id: str, stored: int | None, expected: int | None) -> None:
    """Raise NotFound when there is no stored revision, Conflict when it is not the expected one."""
    if stored is None:
        raise NotFound(f"no document {document_id!r} in collection {collection!r}")
    if expected is not None and stored != expected:
        raise Conflict(
            f"document {document_id!r} in collection {collection!r} is at revision {stored}, not {expected}"
        )


def already_exists(collection: str, document_id: str) -> AlreadyExists:
    """Return the error of a create whose id is taken."""
    return AlreadyExists(f"document {document_id!r} exists in collection {collection!r}")


@contextmanager
def operation_context(index: int) -> Iterator[None]:
    """Prefix the error of a transaction's operation with its position, keeping the error's kind."""
    try:
        yield
    except (NotFound, AlreadyExists, Conflict) as error:
        raise type(error)(f"operations[{index}]: {error}") from error


def index_name(collection: str, path: FieldPath) -> str:
    """Return the SQL name of the index on one field of one collection: a hash, so no user text."""
    digest = hashlib.sha256("\x00".join((collection, *path)).encode()).hexdigest()[:24]
    return f"documents_field_{digest}"

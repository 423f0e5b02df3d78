"""Protobuf messages as JSON documents for the agent and manifest stores, checked for what JSON cannot hold.

The stores keep free-form and deeply nested parts (agent configurations, manifests) as JSON objects in the
protobuf JSON mapping with the proto's field names, so they never see protobuf and a database row reads as
the contract describes it.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import ListValue, Struct, Value

from stord.server.ports import InvalidArgument, JsonObject
from stord.server.rpc import validate as check

__all__ = ["from_document", "to_document"]

_M = TypeVar("_M", bound=Message)


def to_document(message: Message, field: str) -> JsonObject:
    """Return `message` as a JSON object; INVALID_ARGUMENT naming the field for what JSON cannot hold.

    Rejected: non-finite numbers in a Struct or Value, timestamps and durations out of range, and NUL
    characters anywhere (PostgreSQL cannot store them).
    """
    _reject_non_finite(message, field)
    try:
        document = json_format.MessageToDict(message, preserving_proto_field_name=True)
    except (ValueError, json_format.SerializeToJsonError) as error:
        raise InvalidArgument(field, str(error)) from None
    _reject_nul(document, field)
    _drop_negative_zeros(document)
    return document


def from_document(document: JsonObject, message: _M) -> _M:
    """Fill `message` from a document `to_document` made, ignoring fields a later proto dropped."""
    json_format.ParseDict(document, message, ignore_unknown_fields=True)
    return message


def _reject_non_finite(message: Message, path: str) -> None:
    """Name the free-form number JSON cannot hold (NaN, infinities), which MessageToDict would only refuse."""
    if isinstance(message, Value):
        kind = message.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(message.number_value):
            raise InvalidArgument(path, "numbers must be finite")
        if kind == "struct_value":
            _reject_non_finite(message.struct_value, path)
        elif kind == "list_value":
            _reject_non_finite(message.list_value, path)
    elif isinstance(message, Struct):
        for key, value in message.fields.items():
            _reject_non_finite(value, f"{path}.{key}")
    elif isinstance(message, ListValue):
        for index, value in enumerate(message.values):
            _reject_non_finite(value, f"{path}[{index}]")
    else:
        for field, value in message.ListFields():
            if field.message_type is None:
                continue
            if field.is_repeated:
                for index, item in enumerate(value):
                    _reject_non_finite(item, f"{path}.{field.name}[{index}]")
            else:
                _reject_non_finite(value, f"{path}.{field.name}")


def _reject_nul(value: Any, path: str) -> None:
    if isinstance(value, str):
        check.text(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key, path)
            _reject_nul(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_nul(item, f"{path}[{index}]")


def _drop_negative_zeros(value: Any) -> None:
    """Write -0.0 as 0.0 in place, so every backend reads a document back alike.

    PostgreSQL's jsonb drops the sign of zero; documents and events drop it on every backend too.
    """
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(item, float) and item == 0.0:
            value[key] = 0.0
        else:
            _drop_negative_zeros(item)

"""Names, field paths and JSON for the document and job servicers; each failure names the offending field.

JSON arrives as google.protobuf.Struct, whose numbers are doubles: whole numbers below 2**53 become ints, so
they are stored, compared and returned as whole numbers on every backend.
"""

from __future__ import annotations

import re
import uuid

import orjson
from google.protobuf.struct_pb2 import ListValue, NullValue, Struct, Value

from stord.server.documents.port import FieldPath, JsonScalar
from stord.server.documents.rules import FIELD_KEY
from stord.server.ports import InvalidArgument, JsonObject
from stord.server.rpc import validate as check

__all__ = [
    "MAX_JSON_BYTES",
    "field_path",
    "json_object",
    "name",
    "new_id",
    "scalar",
    "to_struct",
]

MAX_JSON_BYTES = 1024 * 1024
MAX_PATH_KEYS = 8
_EXACT_INTEGERS = 2**53

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def name(value: str, field: str) -> str:
    """Return a collection or queue name: 1-128 of A-Z a-z 0-9 _ . - starting with a letter or digit."""
    if _NAME.fullmatch(value) is None:
        raise InvalidArgument(
            field, "must be 1-128 characters of A-Z a-z 0-9 _ . - starting with a letter or digit"
        )
    return value


def new_id() -> str:
    """Return an id for a record the caller did not name."""
    return str(uuid.uuid4())


def field_path(value: str, field: str) -> FieldPath:
    """Return a dotted field path as its keys: 1 to 8, each 1-64 of A-Z a-z 0-9 _ - led by a letter or _."""
    keys = tuple(value.split("."))
    if len(keys) > MAX_PATH_KEYS or not all(FIELD_KEY.fullmatch(key) for key in keys):
        raise InvalidArgument(
            field,
            f"must be 1 to {MAX_PATH_KEYS} dot-separated keys, each 1-64 characters of A-Z a-z 0-9 _ -"
            " starting with a letter or _",
        )
    return keys


def _number(value: float, where: str) -> int | float:
    check.finite(value, where)
    if value.is_integer() and abs(value) < _EXACT_INTEGERS:
        return int(value)
    return value


def _value(value: Value, where: str) -> object:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _object(value.struct_value, where)
    if kind == "list_value":
        return [_value(item, f"{where}[{index}]") for index, item in enumerate(value.list_value.values)]
    if kind == "string_value":
        return check.text(value.string_value, where)
    if kind == "number_value":
        return _number(value.number_value, where)
    if kind == "bool_value":
        return value.bool_value
    return None  # null_value, or no kind set


def _object(struct: Struct, where: str) -> JsonObject:
    return {
        check.text(key, f"{where} key"): _value(item, f"{where}.{key}") for key, item in struct.fields.items()
    }


def json_object(struct: Struct, field: str) -> JsonObject:
    """Return a Struct as a JSON object of at most 1 MiB (encoded), with finite numbers and no NUL."""
    size = struct.ByteSize()
    if size > MAX_JSON_BYTES:
        raise InvalidArgument(field, f"must be at most {MAX_JSON_BYTES} bytes encoded, got {size}")
    return _object(struct, field)


def _check_text(value: object, where: str) -> None:
    """Raise InvalidArgument for a NUL in any string or key of parsed JSON."""
    if isinstance(value, str):
        check.text(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            check.text(key, f"{where} key")
            _check_text(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, f"{where}[{index}]")


def json_object_text(text: str, field: str) -> JsonObject:
    """Return the JSON object a text holds: at most 1 MiB, finite numbers (JSON has no others), no NUL."""
    if len(text) > MAX_JSON_BYTES // 4 and len(text.encode()) > MAX_JSON_BYTES:
        raise InvalidArgument(field, f"must be at most {MAX_JSON_BYTES} bytes")
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise InvalidArgument(field, f"is not JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise InvalidArgument(field, "must be a JSON object")
    if "\\u0000" in text:  # the only way JSON text can carry a NUL; walk the object only then
        _check_text(parsed, field)
    return parsed


def scalar(value: Value, field: str) -> JsonScalar:
    """Return a Value that must be null, a boolean, a number or a string."""
    kind = value.WhichOneof("kind")
    if kind in ("struct_value", "list_value") or kind is None:
        raise InvalidArgument(field, "must be null, a boolean, a number or a string")
    converted = _value(value, field)
    assert converted is None or isinstance(converted, bool | int | float | str)
    return converted


def _proto_value(value: object) -> Value:
    message = Value()
    if value is None:
        message.null_value = NullValue.NULL_VALUE
    elif isinstance(value, bool):
        message.bool_value = value
    elif isinstance(value, int | float):
        message.number_value = value
    elif isinstance(value, str):
        message.string_value = value
    elif isinstance(value, dict):
        message.struct_value.CopyFrom(to_struct(value))
    elif isinstance(value, list):
        message.list_value.CopyFrom(ListValue(values=[_proto_value(item) for item in value]))
    else:
        raise TypeError(f"not a JSON value: {type(value).__name__}")
    return message


def to_struct(data: JsonObject) -> Struct:
    """Return a JSON object as a Struct."""
    return Struct(fields={key: _proto_value(value) for key, value in data.items()})

"""The checks of one field of an export line: each returns the value as the record holds it, or raises
`Invalid` saying what the value must be (the reader adds the line number)."""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import math
from collections.abc import Callable
from typing import Any

from stord.server.ports import InvalidArgument, JsonObject
from stord.server.rpc.calls import resolve_namespace

__all__ = [
    "COUNT",
    "MAYBE_INTEGER",
    "MAYBE_NUMBER",
    "MAYBE_TEXT",
    "Check",
    "Invalid",
    "at_least",
    "blob",
    "boolean",
    "integer",
    "json_object",
    "member",
    "namespace_name",
    "number",
    "optional",
    "text",
    "texts",
]


class Invalid(Exception):
    """A field of the line being read is wrong; the caller adds the line number."""


Check = Callable[[Any], Any]
"""Return a field's value as the record holds it, or raise Invalid saying what the value must be."""


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("must be a string")
    return value


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid("must be an integer")
    return value


def at_least(minimum: int) -> Check:
    def check(value: Any) -> int:
        if integer(value) < minimum:
            raise Invalid(f"must be at least {minimum}")
        return int(value)

    return check


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Invalid("must be a finite number")
    return float(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("must be true or false")
    return value


def blob(value: Any) -> bytes:
    try:
        return base64.b64decode(text(value), validate=True)
    except binascii.Error:
        raise Invalid("must be standard base64") from None


def json_object(value: Any) -> JsonObject:
    if not isinstance(value, dict):
        raise Invalid("must be a JSON object")
    return value


def texts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Invalid("must be a list of strings")
    return tuple(value)


def optional(check: Check) -> Check:
    def optional(value: Any) -> Any:
        return None if value is None else check(value)

    return optional


def member(choices: type[enum.Enum]) -> Check:
    members = {member.value: member for member in choices}
    names = ", ".join(members)

    def check(value: Any) -> enum.Enum:
        member = members.get(value) if isinstance(value, str) else None
        if member is None:
            raise Invalid(f"must be one of {names}, not {value!r}")
        return member

    return check


@functools.lru_cache(maxsize=1024)
def namespace_name(value: str) -> str:
    try:
        return resolve_namespace(value)
    except InvalidArgument:
        raise Invalid("is not a valid namespace") from None


COUNT = at_least(0)
MAYBE_TEXT = optional(text)
MAYBE_INTEGER = optional(integer)
MAYBE_NUMBER = optional(number)

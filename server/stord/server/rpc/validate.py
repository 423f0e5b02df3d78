"""Request checks and conversions shared by the servicers; each failure names the offending field.

Limits differ by what a value is (ids of 256 bytes, keys of 1 KiB), so each check takes its limit, with the
common ones named here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from stord.server.ports import InvalidArgument

MAX_ID_BYTES = 256
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 8 * 1024 * 1024
MAX_BATCH = 1000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

_NANOS = 1_000_000_000
_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z, the least instant a Timestamp may hold
_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z, the greatest
_MAX_DURATION_SECONDS = 315_576_000_000  # 10,000 years: the longest Duration protobuf defines

_T = TypeVar("_T")


# Strings and numbers ---------------------------------------------------------------------------------------


def text(value: str, field: str, max_bytes: int | None = None) -> str:
    """Return text of at most `max_bytes` bytes of UTF-8 (any length for None) without NUL.

    PostgreSQL text cannot hold NUL.
    """
    # A string of at most max_bytes // 4 characters cannot exceed max_bytes, so most skip the encoding.
    if max_bytes is not None and len(value) > max_bytes // 4 and len(value.encode()) > max_bytes:
        raise InvalidArgument(field, f"must be at most {max_bytes} bytes of UTF-8")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    return value


def identifier(value: str, field: str, max_bytes: int = MAX_ID_BYTES) -> str:
    """Return a required id: non-empty UTF-8 of at most `max_bytes` bytes without NUL."""
    if not value:
        raise InvalidArgument(field, "must not be empty")
    return text(value, field, max_bytes)


def key(value: str, field: str = "key") -> str:
    """Return a valid key: non-empty UTF-8 of at most 1 KiB, without NUL."""
    return identifier(value, field, MAX_KEY_BYTES)


def pattern(glob: str, field: str = "pattern") -> str:
    """Return a key glob of at most 1 KiB; empty means every key."""
    return text(glob, field, MAX_KEY_BYTES) or "*"


def value(data: bytes, field: str = "value") -> bytes:
    """Return a value of at most 8 MiB."""
    if len(data) > MAX_VALUE_BYTES:
        raise InvalidArgument(field, f"must be at most {MAX_VALUE_BYTES} bytes, got {len(data)}")
    return data


def finite(number: float, field: str) -> float:
    """Return a finite number, with -0.0 as 0.0 (SQLite and JSON stores drop the sign, so all backends do)."""
    if not math.isfinite(number):
        raise InvalidArgument(field, "must be a finite number")
    return number + 0.0


def enum_value(number: int, enum: EnumDescriptor, field: str) -> int:
    """Return an enum value that the proto defines and that is not its UNSPECIFIED zero."""
    if number == 0 or number not in enum.values_by_number:
        names = ", ".join(item.name for item in enum.values if item.number != 0)
        raise InvalidArgument(field, f"must be one of {names}")
    return number


def batch(items: Sequence[_T], field: str) -> Sequence[_T]:
    """Return a batch of 1 to 1000 items."""
    if not items:
        raise InvalidArgument(field, "must not be empty")
    if len(items) > MAX_BATCH:
        raise InvalidArgument(field, f"must hold at most {MAX_BATCH} items, got {len(items)}")
    return items


# Durations and timestamps ----------------------------------------------------------------------------------


def ttl(duration: Duration, present: bool, field: str = "ttl") -> float | None:
    """Return a TTL in seconds, None when unset or zero (no expiry)."""
    if not present:
        return None
    if duration.seconds < 0 or duration.nanos < 0:
        raise InvalidArgument(field, "must not be negative")
    if duration.nanos >= _NANOS:
        raise InvalidArgument(field, "nanos must be below 1e9")
    if duration.seconds > _MAX_DURATION_SECONDS:
        raise InvalidArgument(field, "must be at most 315,576,000,000 seconds, the largest Duration")
    seconds_ = duration.seconds + duration.nanos / 1e9
    return seconds_ or None


def _in_range(timestamp: Timestamp, field: str) -> Timestamp:
    """Return a Timestamp within 0001-01-01 and 9999-12-31 whose nanos are within [0, 1e9)."""
    if not _MIN_SECONDS <= timestamp.seconds <= _MAX_SECONDS:
        raise InvalidArgument(field, "must be between 0001-01-01 and 9999-12-31")
    if not 0 <= timestamp.nanos < _NANOS:
        raise InvalidArgument(field, "nanos must be between 0 and 999,999,999")
    return timestamp


def seconds(timestamp: Timestamp, field: str) -> float:
    """Return a Timestamp as seconds since the epoch."""
    _in_range(timestamp, field)
    return timestamp.seconds + timestamp.nanos / 1e9


def milliseconds(timestamp: Timestamp, field: str) -> int:
    """Return a Timestamp as milliseconds since the epoch, dropping finer parts."""
    _in_range(timestamp, field)
    return timestamp.seconds * 1000 + timestamp.nanos // 1_000_000


def nanoseconds(timestamp: Timestamp, field: str) -> int:
    """Return a Timestamp as nanoseconds since the epoch."""
    _in_range(timestamp, field)
    return timestamp.seconds * _NANOS + timestamp.nanos


def microseconds(timestamp: Timestamp, field: str) -> int:
    """Return a Timestamp as microseconds since the epoch, dropping finer parts."""
    _in_range(timestamp, field)
    return timestamp.seconds * 1_000_000 + timestamp.nanos // 1000


def duration_microseconds(duration: Duration, field: str) -> int:
    """Return a non-negative Duration as microseconds, dropping finer parts."""
    if duration.seconds < 0 or duration.nanos < 0:
        raise InvalidArgument(field, "must not be negative")
    if duration.nanos >= _NANOS:
        raise InvalidArgument(field, "nanos must be below 1e9")
    return duration.seconds * 1_000_000 + duration.nanos // 1000


def timestamp_from_microseconds(microseconds_: int) -> Timestamp:
    """Return microseconds since the epoch as a Timestamp."""
    seconds_, micros = divmod(microseconds_, 1_000_000)
    return Timestamp(seconds=seconds_, nanos=micros * 1000)


def timestamp_from_seconds(seconds_: float) -> Timestamp:
    """Return seconds since the epoch as a Timestamp."""
    message = Timestamp()
    message.FromNanoseconds(round(seconds_ * 1e9))
    return message


def timestamp_from_milliseconds(milliseconds_: int) -> Timestamp:
    """Return milliseconds since the epoch as a Timestamp."""
    seconds_, millis = divmod(milliseconds_, 1000)
    return Timestamp(seconds=seconds_, nanos=millis * 1_000_000)


def timestamp_from_nanoseconds(nanoseconds_: int) -> Timestamp:
    """Return nanoseconds since the epoch as a Timestamp."""
    seconds_, nanos = divmod(nanoseconds_, _NANOS)
    return Timestamp(seconds=seconds_, nanos=nanos)


# Pages -----------------------------------------------------------------------------------------------------


def page_size(
    size: int, field: str = "page_size", *, limits: tuple[int, int] = (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
) -> int:
    """Return the page size to use: 0 means the default, above the maximum means the maximum."""
    if size < 0:
        raise InvalidArgument(field, "must not be negative")
    default, maximum = limits
    return min(size or default, maximum)

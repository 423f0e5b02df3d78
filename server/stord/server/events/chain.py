"""The per-session hash chain of the event store (DESIGN 4.4), exactly as `events.proto` defines it.

Pure functions, shared by the servicer (canonical JSON of payloads), the ingest algorithm (hashing a batch
inside its transaction) and every backend (verifying a stored chain), so that the chain is the same whatever
stores it.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import math
import re
from collections.abc import Sequence
from typing import NamedTuple

import orjson

from stord.server.events.port import ChainVerification, Event, EventInput

__all__ = [
    "ChainHead",
    "JsonValue",
    "canonical_json",
    "event_hash",
    "format_timestamp",
    "is_hash",
    "orjson_writes_like_javascript",
    "verify_chain",
]

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]

_HASH = re.compile(r"[0-9a-f]{64}")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MAX_ORJSON_INT = 2**63
_JS_EXPONENT_FROM = 1e21
"""JavaScript writes numbers from this magnitude with an exponent, and integral ones below it in full."""
_ORJSON_FIXED_FROM = 1e-5
"""orjson writes numbers from this magnitude as JavaScript does; JavaScript keeps fixed notation to 1e-6."""


class ChainHead(NamedTuple):
    """The end of a session's chain: how many events it holds and the last one's hash.

    A NamedTuple: ingest makes one per event, and a frozen dataclass costs several times more to make.
    """

    length: int = 0
    last_hash: str | None = None


def is_hash(text: str) -> bool:
    """Return whether `text` is a hash as the chain writes them: 64 lowercase hex digits."""
    return _HASH.fullmatch(text) is not None


def format_timestamp(milliseconds: int) -> str:
    """Return the instant as JavaScript's Date.toISOString writes it: `2025-01-31T09:05:00.120Z`."""
    seconds, millis = divmod(milliseconds, 1000)
    return f"{_iso_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    # Cached: a batch's events share a few seconds, and datetime arithmetic costs more than the hash.
    instant = _EPOCH + datetime.timedelta(seconds=seconds)
    return (
        f"{instant.year:04d}-{instant.month:02d}-{instant.day:02d}T{instant.hour:02d}:{instant.minute:02d}:"
        f"{instant.second:02d}"
    )


def orjson_writes_like_javascript(number: float) -> bool:
    """Return whether orjson writes a non-integral double exactly as JavaScript does (and it is finite)."""
    return math.isfinite(number) and not number.is_integer() and abs(number) >= _ORJSON_FIXED_FROM


def canonical_json(value: JsonValue, *, numbers_checked: bool = False) -> str:
    """Return the canonical JSON text of a JSON value (see events.proto); ValueError for NaN or infinity.

    orjson writes it directly (sorted keys, no spaces, JavaScript's escapes) unless a number needs
    JavaScript's own layout, which is rare enough to take a slower path. `numbers_checked` says the caller
    made sure already: integral numbers are ints below 2**63, floats pass `orjson_writes_like_javascript`.
    """
    if numbers_checked or _orjson_writes_like_javascript(value):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return _javascript_json(value)


def _orjson_writes_like_javascript(value: JsonValue) -> bool:
    if isinstance(value, dict):
        return all(_orjson_writes_like_javascript(item) for item in value.values())
    if isinstance(value, list):
        return all(_orjson_writes_like_javascript(item) for item in value)
    if isinstance(value, float):
        magnitude = abs(value)
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
        if value.is_integer():
            return False  # JavaScript writes it without a fraction
        return magnitude >= _ORJSON_FIXED_FROM
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < _MAX_ORJSON_INT
    return True


def _javascript_json(value: JsonValue) -> str:
    if isinstance(value, dict):
        items = sorted(value.items())
        return (
            "{" + ",".join(f"{_javascript_json(key)}:{_javascript_json(item)}" for key, item in items) + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(_javascript_json(item) for item in value) + "]"
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return orjson.dumps(value).decode()
    return _javascript_number(float(value))


def _javascript_number(number: float) -> str:
    """Return `number` as ECMAScript's Number::toString writes it."""
    if not math.isfinite(number):
        raise ValueError("numbers must be finite")
    if number.is_integer() and abs(number) < _JS_EXPONENT_FROM:
        return str(int(number))  # -0.0 too: "0"
    sign = "-" if number < 0 else ""
    # repr gives the shortest digits that round-trip, as ECMAScript requires; only their layout differs.
    written, _, exponent = repr(abs(number)).partition("e")
    whole, _, fraction = written.partition(".")
    all_digits = whole + fraction
    digits = all_digits.lstrip("0")
    # ECMAScript's n: the number is 0.<digits> times 10 ** point.
    point = len(whole) + int(exponent or 0) - (len(all_digits) - len(digits))
    digits = digits.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        return sign + digits + "0" * (point - count)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    power = point - 1
    suffix = f"e{'+' if power >= 0 else '-'}{abs(power)}"
    return sign + (digits if count == 1 else digits[0] + "." + digits[1:]) + suffix


def _json_string(text: str) -> bytes:
    return orjson.dumps(text)


def event_hash(event: Event | EventInput, prev_hash: str | None) -> str:
    """Return the hash of `event` linked after `prev_hash` (None for a chain's first event)."""
    canonical = b"".join(
        (
            b'{"agentId":',
            _json_string(event.agent_id),
            b',"eventType":"',
            event.event_type.value.encode(),
            b'","id":',
            _json_string(event.id),
            b',"metadata":',
            event.metadata.encode(),
            b',"payload":',
            event.payload.encode(),
            b',"prevHash":',
            b"null" if prev_hash is None else b'"' + prev_hash.encode() + b'"',
            b',"sessionId":',
            _json_string(event.session_id),
            b',"severity":"',
            event.severity.value.encode(),
            b'","timestamp":"',
            format_timestamp(event.timestamp).encode(),
            b'","v":2}',
        )
    )
    return hashlib.sha256(canonical).hexdigest()


def verify_chain(events: Sequence[Event], head: ChainHead) -> ChainVerification:
    """Check a session's stored events, ordered by chain_index, against each other and the session's head."""
    if not events:
        if head.length == 0:
            return ChainVerification(valid=True, checked_events=0, first_chain_index=0)
        return ChainVerification(
            valid=False, checked_events=0, first_chain_index=head.length, reason=_missing_tail(head, None)
        )
    first = events[0].chain_index
    expected_index, expected_prev = first, events[0].prev_hash if first > 0 else None
    for checked, event in enumerate(events):
        problem = None
        if event.chain_index != expected_index:
            problem = f"chain_index {event.chain_index} follows {expected_index - 1}: events are missing"
        elif event.prev_hash != expected_prev:
            problem = "prev_hash is not the previous event's hash"
        elif event_hash(event, event.prev_hash) != event.hash:
            problem = "the stored hash does not match the event's content"
        if problem is not None:
            return ChainVerification(
                valid=False,
                checked_events=checked,
                first_chain_index=first,
                broken_event_id=event.id,
                reason=f"event {event.id}: {problem}",
            )
        expected_index, expected_prev = event.chain_index + 1, event.hash
    last = events[-1]
    if head.length != last.chain_index + 1 or head.last_hash != last.hash:
        return ChainVerification(
            valid=False, checked_events=len(events), first_chain_index=first, reason=_missing_tail(head, last)
        )
    return ChainVerification(valid=True, checked_events=len(events), first_chain_index=first)


def _missing_tail(head: ChainHead, last: Event | None) -> str:
    stored = "no event" if last is None else f"events up to chain_index {last.chain_index}"
    return f"the session's chain holds {head.length} events but {stored} are stored: its end is missing"

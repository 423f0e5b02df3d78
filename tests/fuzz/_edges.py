"""What the stateful fuzzers share: boundary values, real page tokens mutated, and the call that checks.

Every call goes through the real gRPC API. The invariant checked on every answer: nothing is INTERNAL or
UNKNOWN. `make test` runs a few examples per machine (derandomized, so a failure reproduces); `make fuzz`
sets STORD_FUZZ_EXAMPLES and STORD_FUZZ_STEPS for a longer, random run.
"""

from __future__ import annotations

import base64
import math
import os
import re
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import struct_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from stord.server.rpc.calls import NAMESPACE_METADATA

__all__ = [
    "FUZZ_SETTINGS",
    "Answer",
    "Caller",
    "durations",
    "floats",
    "int32s",
    "int64s",
    "mutated_token",
    "structs",
    "texts",
    "timestamps",
]

_LONG_RUN = "STORD_FUZZ_EXAMPLES" in os.environ
FUZZ_SETTINGS = settings(
    max_examples=int(os.environ.get("STORD_FUZZ_EXAMPLES", "8")),
    stateful_step_count=int(os.environ.get("STORD_FUZZ_STEPS", "12")),
    deadline=None,
    derandomize=not _LONG_RUN,  # the bounded run is the same every time: a failure in CI reproduces here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_DURATION_SECONDS = 315_576_000_000  # the largest Duration protobuf allows: 10,000 years
INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)

_T = TypeVar("_T")
Answer = Any


def _edges(low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([low, high, low + 1, high - 1, 0, 1, -1]), st.integers(low, high))


def int64s() -> st.SearchStrategy[int]:
    return _edges(*INT64)


def int32s() -> st.SearchStrategy[int]:
    return _edges(*INT32)


def timestamps(*, valid_only: bool = False) -> st.SearchStrategy[Timestamp]:
    """Instants at both ends of Timestamp's range, with nanoseconds; beyond it too unless valid_only."""
    seconds = st.one_of(
        st.sampled_from([MIN_SECONDS, MAX_SECONDS, 0, -1, 1_700_000_000]),
        st.integers(MIN_SECONDS, MAX_SECONDS),
    )
    nanos = st.sampled_from([0, 1, 999_999_999, 500_000_000])
    valid = st.builds(Timestamp, seconds=seconds, nanos=nanos)
    if valid_only:
        return valid
    invalid = st.builds(
        Timestamp,
        seconds=st.sampled_from([MIN_SECONDS - 1, MAX_SECONDS + 1, INT64[0], INT64[1]]),
        nanos=st.sampled_from([0, -1, 1_000_000_000, INT32[1]]),
    )
    return st.one_of(valid, valid, valid, invalid)


def durations() -> st.SearchStrategy[Duration]:
    """Durations from nothing to the largest one protobuf allows, and a few beyond."""
    return st.one_of(
        st.builds(
            Duration,
            seconds=st.sampled_from([0, 1, 60, MAX_DURATION_SECONDS, -MAX_DURATION_SECONDS, INT64[1], -1]),
            nanos=st.sampled_from([0, 999_999_999, -999_999_999, 1]),
        ),
        st.builds(Duration, seconds=st.integers(0, MAX_DURATION_SECONDS), nanos=st.integers(0, 999_999_999)),
    )


def floats() -> st.SearchStrategy[float]:
    """Mostly finite doubles at their edges, and now and then NaN or an infinity (which must be refused)."""
    finite = st.one_of(
        st.sampled_from([-0.0, 0.0, 1e308, -1e308, 5e-324, 2.0**53 + 1, 0.1]),
        st.floats(allow_nan=False, allow_infinity=False),
    )
    return st.one_of(finite, finite, finite, st.sampled_from([math.nan, math.inf, -math.inf]))


def texts(max_bytes: int) -> st.SearchStrategy[str]:
    """Empty, maximum-length, multibyte and metacharacter text around a limit of `max_bytes` UTF-8 bytes."""
    return st.one_of(
        st.sampled_from(
            [
                "",
                "a",
                "ключ ✓ 𝄞 日本",
                "%_*?[]\\'\"",
                "a" * max_bytes,
                "a" * (max_bytes + 1),
                "é" * (max_bytes // 2),
                "𝄞" * (max_bytes // 4 + 1),
                "\x00",
            ]
        ),
        st.text(min_size=1, max_size=12),
    )


def _json_values(depth: int = 2) -> st.SearchStrategy[Value]:
    scalars = st.one_of(
        floats().map(lambda number: Value(number_value=number)),
        int64s().map(lambda number: Value(number_value=float(number))),
        texts(64).map(lambda text: Value(string_value=text)),
        st.booleans().map(lambda flag: Value(bool_value=flag)),
        st.just(Value(null_value=struct_pb2.NULL_VALUE)),
    )
    if depth == 0:
        return scalars
    return st.one_of(scalars, structs(depth - 1).map(lambda nested: Value(struct_value=nested)))


def structs(depth: int = 2) -> st.SearchStrategy[Struct]:
    """JSON objects holding NaN, infinities, 64-bit extremes, multibyte and empty keys, nested a little."""

    def build(fields: dict[str, Value]) -> Struct:
        message = Struct()
        for key, item in fields.items():
            message.fields[key].CopyFrom(item)
        return message

    keys = st.one_of(st.sampled_from(["a", "b", "", "ключ", "a.b", "$x", "%"]), st.text(max_size=6))
    return st.dictionaries(keys, _json_values(depth), max_size=4).map(build)


_MUTATIONS = st.tuples(st.integers(0, 4), st.integers(0, 2**16), st.integers(0, 7))
"""A kind of damage, where, and which bit or number: drawn apart from the token, whose length varies from
run to run, so hypothesis replays the same draws."""
_NUMBERS = (2**64, -1, 2**63, 10**40)
_SUFFIXES = ("A", "==", "\u0663", "MTI", "9" * 30)


def mutated_token(token: str, data: st.DataObject) -> str:
    """Return a token made from a real one: a bit flipped, cut short, garbled, or renumbered under its MAC."""
    kind, where, which = data.draw(_MUTATIONS)
    sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    if kind == 0:
        altered = bytearray(sealed)
        altered[where % len(altered)] ^= 1 << which
        return base64.urlsafe_b64encode(bytes(altered)).decode().rstrip("=")
    if kind == 1:
        return token[: 1 + where % (len(token) - 1)]
    if kind == 2:
        return token + _SUFFIXES[which % len(_SUFFIXES)]
    if kind == 3:
        return token[::-1]
    # Another number in the position, keeping the version byte and the MAC.
    body = re.sub(rb"-?[0-9]+", str(_NUMBERS[which % len(_NUMBERS)]).encode(), sealed[1:-32], count=1)
    return base64.urlsafe_b64encode(sealed[:1] + body + sealed[-32:]).decode().rstrip("=")


class Caller:
    """Make calls in a fresh namespace of one daemon; fail the test on INTERNAL or UNKNOWN."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.metadata = ((NAMESPACE_METADATA, f"fz-{uuid.uuid4().hex[:12]}"),)

    def __call__(self, method: Callable[..., _T], request: Message) -> _T | grpc.StatusCode:
        """Return the answer, or the status code of a refusal (never INTERNAL or UNKNOWN)."""
        try:
            return method(request, metadata=self.metadata, timeout=60)
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            details = error.details()
        if code in FORBIDDEN:
            raise AssertionError(f"{code.name}: {details}\nfor {type(request).__name__} {request}")
        return code

    def refused_token(self, method: Callable[..., Any], request: Message, token: str, real: str) -> None:
        """A token other than the real one is INVALID_ARGUMENT naming page_token."""
        if token == real:
            return
        copy = type(request)()
        copy.CopyFrom(request)
        copy.MergeFrom(type(request)(page_token=token))  # type: ignore[call-arg]
        answer = self(method, copy)
        assert answer is grpc.StatusCode.INVALID_ARGUMENT, f"a mutated page token was answered with {answer}"

    def close(self) -> None:
        self.channel.close()

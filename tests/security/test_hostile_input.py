"""Hostile input: random and malformed requests to every RPC of every service, on SQLite and PostgreSQL.

Requests are built from the proto descriptors, so a new RPC or field is fuzzed without touching this file:
any field set or not, numbers at and beyond their edges, unknown and unspecified enum values, huge and empty
strings and bytes, far-off timestamps, Structs nested past the parser's depth limit, and raw bytes that are
no message at all. The daemon may refuse anything, but never with INTERNAL or UNKNOWN; afterwards it still
serves, and data written before in another namespace is intact.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stord.client import Client, ResourceExhausted
from stord.server.app import ADMIN_SERVICE
from stord.server.rpc.registry import CONTRACTS
from tests.conftest import Daemons

EXAMPLES_PER_BACKEND = 1000
"""Generated requests per backend and run (each one RPC); two backends make 2000 per run."""

MAX_DEPTH = 3
"""How deep generated messages nest, apart from the deliberately over-deep Structs."""

FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

_INTEGER_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def _methods() -> dict[str, MethodDescriptor]:
    pool = descriptor_pool.Default()
    services = [contract.service for contract in CONTRACTS] + [ADMIN_SERVICE]
    return {
        f"/{service}/{method.name}": method
        for service in services
        for method in pool.FindServiceByName(service).methods
    }


METHODS = _methods()


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = st.sampled_from([low, high, 0, -1 if low < 0 else 1, 1000, 1001, 10**6])
    return st.one_of(edges.filter(lambda value: low <= value <= high), st.integers(low, high))


def _texts() -> st.SearchStrategy[str]:
    plausible = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)  # passes identifier checks
    return st.one_of(
        plausible,
        plausible,
        st.text(max_size=40),
        st.sampled_from(["", " ", "*", "?", "%", "_", "[", "'; DROP TABLE kv; --", "a.b.c", "$.x", "\x00"]),
        st.integers(1, 4).map(lambda scale: "k" * (10**scale + 7)),
    )


def _binaries() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=64), st.just(b"\xff\xfe" * 70_000))


def _deep_struct(depth: int) -> struct_pb2.Struct:
    root = struct_pb2.Struct()
    node = root
    for _ in range(depth):
        node = node.fields["a"].struct_value
    return root


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    cpp = field.cpp_type
    if cpp in _INTEGER_RANGES:
        return _integers(*_INTEGER_RANGES[cpp])
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if cpp in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return st.floats(width=32) if cpp == FieldDescriptor.CPPTYPE_FLOAT else st.floats()
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        return st.integers(-3, 40)  # unspecified (0), known and unknown values
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _binaries()
    return _texts()


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        return _message(field.message_type, depth + 1)
    return _scalar(field)


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None and _is_map(field):
        entry = field.message_type
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        return st.dictionaries(_scalar(key), _value(value, depth), max_size=3)
    if field.is_repeated:
        return st.lists(_value(field, depth), max_size=3)
    return _value(field, depth)


def _assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    target = getattr(message, field.name)
    if _is_map(field):
        for key, item in value.items():
            if isinstance(item, Message):
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _build(descriptor: Descriptor, values: dict[str, Any]) -> Message:
    message: Message = GetMessageClass(descriptor)()
    for name, value in values.items():
        _assign(message, descriptor.fields_by_name[name], value)
    return message


def _message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    if descriptor.full_name == "google.protobuf.Struct":
        deep = st.integers(20, 120).map(_deep_struct)
        if depth >= MAX_DEPTH:
            return deep
        return st.one_of(deep, _fields_of(descriptor, depth))
    if depth >= MAX_DEPTH:
        return st.just(GetMessageClass(descriptor)())
    return _fields_of(descriptor, depth)


def _fields_of(descriptor: Descriptor, depth: int) -> st.SearchStrategy[Message]:
    optional = {field.name: _field(field, depth) for field in descriptor.fields}
    return st.fixed_dictionaries({}, optional=optional).map(lambda values: _build(descriptor, values))


def _request(method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    valid = _message(method.input_type).map(lambda message: message.SerializeToString())
    return st.one_of(
        valid, valid, valid, st.binary(min_size=1, max_size=200)
    )  # mostly messages, some garbage


REQUESTS = st.sampled_from(sorted(METHODS)).flatmap(
    lambda path: _request(METHODS[path]).map(lambda payload: (path, payload))
)


def _raw(data: bytes) -> bytes:
    return data


def _send(channel: grpc.Channel, path: str, payload: bytes, namespace: str) -> str:
    """Call one RPC with raw request bytes; return the status name, failing on a forbidden one."""
    method = METHODS[path]
    metadata = (("stord-namespace", namespace),)
    # Streams that wait for more (tails, long polls) end at the deadline, which is an acceptable answer.
    timeout = 0.5 if method.server_streaming else 2.0
    try:
        if method.client_streaming:
            streamed = channel.stream_stream(path, request_serializer=_raw, response_deserializer=_raw)
            for _ in streamed(iter([payload, payload]), timeout=timeout, metadata=metadata):
                pass
        elif method.server_streaming:
            tail = channel.unary_stream(path, request_serializer=_raw, response_deserializer=_raw)
            for _ in tail(payload, timeout=timeout, metadata=metadata):
                pass
        else:
            unary = channel.unary_unary(path, request_serializer=_raw, response_deserializer=_raw)
            unary(payload, timeout=timeout, metadata=metadata)
    except grpc.RpcError as error:
        refusal = error
    else:
        return "OK"
    code = refusal.code()
    assert code not in FORBIDDEN, f"{path} answered {code.name}: {refusal.details()}"
    return str(code.name)


def _write_keepsakes(client: Client) -> str:
    client.db.set("keep", b"safe")
    client.cache.set("keep", b"safe")
    client.documents.create("keep", {"n": 1}, id="d1")
    return client.jobs.enqueue("keep")


def _check_keepsakes(client: Client, job_id: str) -> None:
    assert client.db.get("keep") == b"safe"
    assert client.cache.get("keep") == b"safe"
    document = client.documents.get("keep", "d1")
    assert document is not None
    assert document.data == {"n": 1}
    assert client.jobs.get(job_id) is not None


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, daemons: Daemons) -> str:
    return daemons.get(request.param).target


def test_hostile_requests_never_answer_internal_and_leave_data_intact(target: str) -> None:
    keeper = Client(target, namespace=f"keep-{uuid.uuid4().hex[:8]}")
    fuzz_namespace = f"fuzz-{uuid.uuid4().hex[:8]}"
    with keeper, grpc.insecure_channel(target) as channel:
        job_id = _write_keepsakes(keeper)

        @settings(
            max_examples=EXAMPLES_PER_BACKEND,
            deadline=None,
            derandomize=True,  # the same requests every run: a failure in CI reproduces locally
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(REQUESTS)
        def send_one(case: tuple[str, bytes]) -> None:
            answers[_send(channel, *case, fuzz_namespace)] += 1

        answers: Counter[str] = Counter()
        send_one()
        # The generator must reach past the parser: some requests succeed, some are refused as invalid.
        assert answers["OK"] > 0
        assert answers["INVALID_ARGUMENT"] > 0
        print(f"{sum(answers.values())} requests: {dict(answers)}")
        _check_keepsakes(keeper, job_id)
        assert keeper.db.get("keep") == b"safe"


def test_an_oversized_message_is_resource_exhausted_and_harmless(daemons: Daemons) -> None:
    target = daemons.get("sqlite").target
    with Client(target, namespace=f"big-{uuid.uuid4().hex[:8]}", timeout=30) as client:
        with pytest.raises(ResourceExhausted):
            client.db.set("big", b"x" * (17 * 1024 * 1024))  # over the 16 MiB default limit
        client.db.set("small", b"ok")
        assert client.db.get("small") == b"ok"

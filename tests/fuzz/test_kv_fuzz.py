"""Stateful fuzzing of key-value (cache and database roles) on every backend, Redis included."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from stord.v1 import kv_pb2 as pb
from stord.v1 import kv_pb2_grpc
from tests.conftest import KV_BACKENDS, Daemons
from tests.fuzz._edges import FUZZ_SETTINGS, Caller, durations, int32s, int64s, mutated_token, texts

KEYS = st.one_of(st.sampled_from(["k", "ключ", "a*b", "%_", "k?"]), texts(1024))
VALUES = st.one_of(st.binary(max_size=32), st.sampled_from([b"", b"\x00\xff", b"v" * 70_000]))


class KeyValueMachine(RuleBasedStateMachine):
    target = ""

    def __init__(self) -> None:
        super().__init__()
        self.call = Caller(self.target)
        self.db = kv_pb2_grpc.DatabaseServiceStub(self.call.channel)
        self.cache = kv_pb2_grpc.CacheServiceStub(self.call.channel)
        self.values: dict[str, bytes] = {}
        self.lists: dict[str, list[bytes]] = {}

    def teardown(self) -> None:
        self.call.close()

    @rule(key=KEYS, value=VALUES)
    def set(self, key: str, value: bytes) -> None:
        answer = self.call(self.db.Set, pb.DatabaseServiceSetRequest(key=key, value=value))
        if isinstance(answer, pb.DatabaseServiceSetResponse):
            self.values[key] = value

    @rule(key=KEYS, value=VALUES)
    def append(self, key: str, value: bytes) -> None:
        answer = self.call(self.db.Append, pb.DatabaseServiceAppendRequest(key=key, value=value))
        if isinstance(answer, pb.DatabaseServiceAppendResponse):
            self.lists.setdefault(key, []).append(value)
            assert answer.length == len(self.lists[key])

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        answer = self.call(self.db.Delete, pb.DatabaseServiceDeleteRequest(key=key))
        if isinstance(answer, pb.DatabaseServiceDeleteResponse):
            self.values.pop(key, None)
            self.lists.pop(key, None)

    @rule(key=KEYS, start=int64s(), count=int32s())
    def get_range(self, key: str, start: int, count: int) -> None:
        answer = self.call(
            self.db.GetRange, pb.DatabaseServiceGetRangeRequest(key=key, start=start, count=count)
        )
        if isinstance(answer, pb.DatabaseServiceGetRangeResponse) and key in self.lists:
            assert all(value in self.lists[key] for value in answer.values)

    @rule(key=KEYS, value=VALUES, ttl=durations())
    def cache_set(self, key: str, value: bytes, ttl: object) -> None:
        request = pb.CacheServiceSetRequest(key=key, value=value)
        request.ttl.CopyFrom(ttl)  # type: ignore[arg-type]
        answer = self.call(self.cache.Set, request)
        if isinstance(answer, pb.CacheServiceSetResponse) and answer.written:
            got = self.call(self.cache.Get, pb.CacheServiceGetRequest(key=key))
            assert isinstance(got, pb.CacheServiceGetResponse)
            if got.found:  # a TTL shorter than the round trip may have expired it
                assert got.value == value

    @invariant()
    def values_and_lists_read_back(self) -> None:
        for key, value in self.values.items():
            got = self.call(self.db.Get, pb.DatabaseServiceGetRequest(key=key))
            assert isinstance(got, pb.DatabaseServiceGetResponse)
            assert (got.found, got.value) == (True, value)
        for key, items in self.lists.items():
            got_range = self.call(self.db.GetRange, pb.DatabaseServiceGetRangeRequest(key=key))
            assert isinstance(got_range, pb.DatabaseServiceGetRangeResponse)
            assert list(got_range.values) == items

    @rule(pattern=st.one_of(st.just(""), st.just("*"), KEYS), page_size=st.integers(1, 3), data=st.data())
    def keys_pages(self, pattern: str, page_size: int, data: st.DataObject) -> None:
        request = pb.DatabaseServiceKeysRequest(pattern=pattern, page_size=page_size)
        seen: list[str] = []
        for _ in range(100):
            answer = self.call(self.db.Keys, request)
            if not isinstance(answer, pb.DatabaseServiceKeysResponse):
                return
            seen += answer.keys
            if not answer.next_page_token:
                break
            token = answer.next_page_token
            self.call.refused_token(self.db.Keys, request, mutated_token(token, data), token)
            request.page_token = token
        assert len(seen) == len(set(seen)), "a page repeated a key"
        if pattern in ("", "*"):
            assert set(seen) == set(self.values) | set(self.lists)


@pytest.mark.parametrize("backend", KV_BACKENDS)
def test_key_value_fuzz(backend: str, daemons: Daemons) -> None:
    KeyValueMachine.target = daemons.get(backend).target
    run_state_machine_as_test(KeyValueMachine, settings=FUZZ_SETTINGS)

"""The key-value contract (DESIGN 4.1), through the real gRPC API, on every backend that serves it.

Most behaviours hold for both services; the `kv` fixture runs those once against CacheService and once against
DatabaseService. TTLs and lists belong to one service each.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from stord.client import AsyncClient, Cache, Client, Database, InvalidArgument
from stord.v1 import kv_pb2, kv_pb2_grpc
from tests.conftest import CLOCKED, SharedDaemon

KeyValue = Cache | Database


@pytest.fixture(params=["cache", "db"])
def kv(request: pytest.FixtureRequest, client: Client) -> KeyValue:
    service: KeyValue = getattr(client, request.param)
    return service


def expire(served: SharedDaemon, seconds: float) -> None:
    """Let `seconds` pass for the backend: move the injected clock, or wait where the backend keeps time."""
    if served.kind in CLOCKED:
        served.clock.advance(seconds)
    else:
        time.sleep(seconds)


# Values --------------------------------------------------------------------------------------------------


def test_get_returns_what_set_wrote_and_none_for_a_missing_key(kv: KeyValue) -> None:
    assert kv.get("missing") is None
    assert kv.set("k", b"\x00\xffbinary") is True
    assert kv.get("k") == b"\x00\xffbinary"
    kv.set("k", b"replaced")
    assert kv.get("k") == b"replaced"


def test_an_empty_value_is_a_value(kv: KeyValue) -> None:
    kv.set("empty", b"")
    assert kv.get("empty") == b""
    assert kv.exists("empty")
    assert kv.get_many(["empty", "none"]) == [b"", None]


def test_a_value_of_the_largest_size_reads_back(kv: KeyValue) -> None:
    largest = bytes(range(256)) * (8 * 1024 * 1024 // 256)  # 8 MiB: over gRPC's 4 MiB receive default
    assert kv.set("largest", largest) is True
    assert kv.get("largest") == largest
    assert kv.get_many(["largest"]) == [largest]


def test_delete_reports_whether_there_was_a_value(kv: KeyValue) -> None:
    kv.set("k", b"v")
    assert kv.delete("k") is True
    assert kv.get("k") is None
    assert not kv.exists("k")
    assert kv.delete("k") is False


def test_get_many_answers_in_request_order_with_repeats_and_misses(kv: KeyValue) -> None:
    kv.set_many({"a": b"1", "b": b"2"})
    assert kv.get_many(["b", "missing", "a", "b"]) == [b"2", None, b"1", b"2"]


def test_set_many_writes_nothing_when_one_entry_is_invalid(kv: KeyValue) -> None:
    with pytest.raises(InvalidArgument, match=r"entries\[1\]\.key"):
        kv.set_many({"good": b"1", "": b"2"})
    assert kv.get("good") is None


def test_set_if_absent_and_if_present(kv: KeyValue) -> None:
    assert kv.set("lock", b"first", if_present=True) is False
    assert kv.get("lock") is None
    assert kv.set("lock", b"first", if_absent=True) is True
    assert kv.set("lock", b"second", if_absent=True) is False
    assert kv.get("lock") == b"first"
    assert kv.set("lock", b"third", if_present=True) is True
    assert kv.get("lock") == b"third"


def test_json_helpers_round_trip(kv: KeyValue) -> None:
    kv.set_json("doc", {"name": "ü", "n": [1, 2.5, None, True]})
    assert kv.get_json("doc") == {"name": "ü", "n": [1, 2.5, None, True]}
    assert kv.get_json("missing") is None


# Keys and namespaces -------------------------------------------------------------------------------------


def test_keys_glob_star_and_question_mark(kv: KeyValue) -> None:
    kv.set_many(dict.fromkeys(["user:1", "user:22", "user:3", "users", "User:4", "session:1"], b""))
    assert list(kv.keys("user:*")) == ["user:1", "user:22", "user:3"]
    assert list(kv.keys("user:?")) == ["user:1", "user:3"]
    assert list(kv.keys("*:1")) == ["session:1", "user:1"]
    assert list(kv.keys("USER*")) == []
    assert list(kv.keys()) == ["User:4", "session:1", "user:1", "user:22", "user:3", "users"]


def test_keys_treat_sql_and_glob_metacharacters_as_plain(kv: KeyValue) -> None:
    names = ["100%", "1000", "a_b", "axb", "[x]", "x", "back\\slash", "backxslash"]
    kv.set_many(dict.fromkeys(names, b""))
    assert list(kv.keys("100%")) == ["100%"]
    assert list(kv.keys("a_b")) == ["a_b"]
    assert list(kv.keys("[x]")) == ["[x]"]
    assert list(kv.keys("back\\slash")) == ["back\\slash"]
    assert list(kv.keys("%")) == []
    assert list(kv.keys("_*")) == []


def test_question_mark_matches_one_character_not_one_byte(kv: KeyValue) -> None:
    kv.set_many({"café": b"", "cafe": b"", "caffé": b""})
    assert list(kv.keys("caf?")) == ["cafe", "café"]
    assert list(kv.keys("caf??")) == ["caffé"]


def test_keys_page_in_order_until_the_last_page(kv: KeyValue) -> None:
    names = [f"key-{index:02d}" for index in range(25)]
    kv.set_many(dict.fromkeys(reversed(names), b""))
    assert list(kv.keys("key-*", page_size=10)) == names
    assert list(kv.keys("key-*", page_size=25)) == names


def test_keys_page_tokens(client: Client) -> None:
    client.cache.set_many({f"k{index}": b"" for index in range(5)})
    stub = kv_pb2_grpc.CacheServiceStub(client._channel)
    metadata = client._call.metadata
    first = stub.Keys(kv_pb2.CacheServiceKeysRequest(page_size=2), metadata=metadata)
    assert list(first.keys) == ["k0", "k1"]
    assert first.next_page_token
    second = stub.Keys(
        kv_pb2.CacheServiceKeysRequest(page_size=3, page_token=first.next_page_token), metadata=metadata
    )
    assert list(second.keys) == ["k2", "k3", "k4"]
    assert second.next_page_token == ""


def test_namespaces_are_isolated_and_clear_stays_in_its_own(served: SharedDaemon) -> None:
    with served.client("tenant-a") as a, served.client("tenant-b") as b:
        for service in ("cache", "db"):
            getattr(a, service).set("shared-name", b"from a")
            getattr(b, service).set("shared-name", b"from b")
            assert getattr(a, service).get("shared-name") == b"from a"
            getattr(a, service).clear()
            assert getattr(a, service).get("shared-name") is None
            assert list(getattr(a, service).keys()) == []
            assert getattr(b, service).get("shared-name") == b"from b"
            assert list(getattr(b, service).keys()) == ["shared-name"]


def test_cache_and_database_keys_are_separate(client: Client) -> None:
    client.cache.set("k", b"cached")
    client.db.set("k", b"stored")
    assert client.cache.get("k") == b"cached"
    assert client.db.get("k") == b"stored"
    client.cache.clear()
    assert client.db.get("k") == b"stored"


def test_default_namespace_is_used_without_metadata(served: SharedDaemon) -> None:
    with Client(served.target) as anonymous, served.client("default") as named:
        anonymous.db.set("default-ns-key", b"v")
        assert named.db.get("default-ns-key") == b"v"
        anonymous.db.delete("default-ns-key")


# Expiry ----------------------------------------------------------------------------------------------------


def test_expired_key_is_invisible_to_every_read(served: SharedDaemon, client: Client) -> None:
    cache = client.cache
    cache.set("short", b"v", ttl=0.5)
    cache.set("forever", b"v")
    cache.set("zero-ttl", b"v", ttl=0)
    assert cache.get("short") == b"v"
    expire(served, 1.2)
    assert cache.get("short") is None
    assert not cache.exists("short")
    assert cache.get_many(["short", "forever"]) == [None, b"v"]
    assert list(cache.keys()) == ["forever", "zero-ttl"]
    assert cache.delete("short") is False
    assert cache.get("zero-ttl") == b"v"


def test_an_expired_key_counts_as_absent_for_conditional_sets(served: SharedDaemon, client: Client) -> None:
    cache = client.cache
    cache.set("lock", b"holder-1", ttl=0.5)
    assert cache.set("lock", b"holder-2", if_absent=True) is False
    expire(served, 1.2)
    assert cache.set("lock", b"holder-3", if_present=True) is False
    assert cache.set("lock", b"holder-2", if_absent=True) is True
    assert cache.get("lock") == b"holder-2"


def test_set_replaces_the_expiry(served: SharedDaemon, client: Client) -> None:
    client.cache.set("k", b"v", ttl=0.5)
    client.cache.set("k", b"v2")
    expire(served, 1.2)
    assert client.cache.get("k") == b"v2"


def test_mset_gives_each_entry_its_own_ttl(served: SharedDaemon, client: Client) -> None:
    stub = kv_pb2_grpc.CacheServiceStub(client._channel)
    entries = [
        kv_pb2.CacheEntry(key="short", value=b"1", ttl=Duration(nanos=500_000_000)),
        kv_pb2.CacheEntry(key="long", value=b"2", ttl=Duration(seconds=3600)),
        kv_pb2.CacheEntry(key="none", value=b"3"),
    ]
    stub.MSet(kv_pb2.CacheServiceMSetRequest(entries=entries), metadata=client._call.metadata)
    expire(served, 1.2)
    assert client.cache.get_many(["short", "long", "none"]) == [None, b"2", b"3"]


def test_sweeping_reclaims_expired_values_and_keeps_live_ones(served: SharedDaemon, client: Client) -> None:
    client.cache.set_many({f"old-{index}": b"v" for index in range(5)}, ttl=0.5)
    client.cache.set("live", b"v", ttl=3600)
    expire(served, 1.2)
    swept = served.thread.run(served.thread.daemon.sweep_expired())
    if served.kind in CLOCKED:
        assert swept >= 5
    else:
        assert swept == 0  # Redis reclaims expired keys itself
    assert client.cache.get("live") == b"v"
    assert list(client.cache.keys()) == ["live"]


# Lists ------------------------------------------------------------------------------------------


@pytest.fixture
def letters(client: Client) -> Database:
    for index, letter in enumerate("abcde", start=1):
        assert client.db.append("letters", letter.encode()) == index
    return client.db


@pytest.mark.parametrize(
    ("start", "count", "expected"),
    [
        (0, 0, "abcde"),
        (0, 2, "ab"),
        (3, 10, "de"),
        (5, 1, ""),
        (-1, 1, "e"),
        (-2, 0, "de"),
        (-3, 2, "cd"),
        (-5, 5, "abcde"),
        (-10, 3, ""),
        (-10, 8, "abc"),
        (-7, 3, "a"),
    ],
)
def test_get_range_positions(letters: Database, start: int, count: int, expected: str) -> None:
    assert b"".join(letters.get_range("letters", start, count)) == expected.encode()


def test_missing_list_is_empty(client: Client) -> None:
    assert client.db.get_range("nothing") == []
    assert client.db.length("nothing") == 0
    assert not client.db.exists("nothing")


def test_a_key_holds_a_value_and_a_list_and_delete_removes_both(letters: Database) -> None:
    assert letters.length("letters") == 5
    assert letters.exists("letters")
    assert letters.get("letters") is None
    assert list(letters.keys()) == ["letters"]
    letters.set("letters", b"value")
    assert letters.get("letters") == b"value"
    assert letters.length("letters") == 5
    assert letters.delete("letters") is True
    assert letters.length("letters") == 0
    assert letters.get("letters") is None
    assert letters.delete("letters") is False


def test_clear_removes_lists(letters: Database) -> None:
    letters.clear()
    assert letters.length("letters") == 0
    assert list(letters.keys()) == []


def test_concurrent_appends_each_get_their_own_position(served: SharedDaemon) -> None:
    async def append_all() -> list[int]:
        async with AsyncClient(served.target, namespace="concurrent-appends") as client:
            await client.db.clear()
            lengths = await asyncio.gather(*(client.db.append("log", b"%d" % n) for n in range(50)))
            assert sorted(await client.db.get_range("log", 0, 0)) == sorted(b"%d" % n for n in range(50))
            return lengths

    assert sorted(asyncio.run(append_all())) == list(range(1, 51))


# Bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "field"),
    [("", "key"), ("k" * 1025, "key"), ("é" * 513, "key"), ("nul\x00key", "key")],
)
def test_bad_keys_are_invalid_arguments_naming_the_field(kv: KeyValue, key: str, field: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^INVALID_ARGUMENT: {field}: "):
        kv.set(key, b"v")
    with pytest.raises(InvalidArgument, match=f"^INVALID_ARGUMENT: {field}: "):
        kv.get(key)


def test_a_key_of_exactly_1_kib_is_fine(kv: KeyValue) -> None:
    kv.set("k" * 1024, b"v")
    assert kv.get("k" * 1024) == b"v"


def test_negative_ttl_is_invalid(client: Client) -> None:
    with pytest.raises(InvalidArgument, match="ttl: must not be negative"):
        client.cache.set("k", b"v", ttl=-1)


def test_unspecified_condition_is_invalid(client: Client) -> None:
    stub = kv_pb2_grpc.DatabaseServiceStub(client._channel)
    request = kv_pb2.DatabaseServiceSetRequest(
        key="k", value=b"v", condition=kv_pb2.SET_CONDITION_UNSPECIFIED
    )
    with pytest.raises(grpc.RpcError) as failure:
        stub.Set(request, metadata=client._call.metadata)
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "condition" in (failure.value.details() or "")


def test_batches_over_1000_are_invalid(kv: KeyValue) -> None:
    with pytest.raises(InvalidArgument, match="keys: must hold at most 1000"):
        kv.get_many([f"k{index}" for index in range(1001)])
    with pytest.raises(InvalidArgument, match="entries: must hold at most 1000"):
        kv.set_many({f"k{index}": b"" for index in range(1001)})
    with pytest.raises(InvalidArgument, match="keys: must not be empty"):
        kv.get_many([])


def test_bad_patterns_and_paging_are_invalid(kv: KeyValue) -> None:
    with pytest.raises(InvalidArgument, match="page_size"):
        list(kv.keys(page_size=-1))
    with pytest.raises(InvalidArgument, match="pattern: must not contain NUL"):
        list(kv.keys("a\x00*"))
    with pytest.raises(InvalidArgument, match="pattern: must be at most 1024 bytes"):
        list(kv.keys("*" * 1025))


def test_forged_page_token_is_invalid(client: Client) -> None:
    stub = kv_pb2_grpc.CacheServiceStub(client._channel)
    with pytest.raises(grpc.RpcError) as failure:
        stub.Keys(kv_pb2.CacheServiceKeysRequest(page_token="%%%"), metadata=client._call.metadata)
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (failure.value.details() or "")


def test_range_count_over_1000_is_invalid(client: Client) -> None:
    with pytest.raises(InvalidArgument, match="count"):
        client.db.get_range("k", 0, 1001)


def test_value_over_8_mib_is_invalid(kv: KeyValue) -> None:
    with pytest.raises(InvalidArgument, match="value: must be at most"):
        kv.set("big", b"x" * (8 * 1024 * 1024 + 1))
    assert kv.get("big") is None


@pytest.mark.parametrize("namespace", ["", "has space", "-leading-dash", "x" * 65])
def test_bad_namespace_is_invalid(served: SharedDaemon, namespace: str) -> None:
    with (
        Client(served.target, namespace=namespace) as client,
        pytest.raises(InvalidArgument, match="namespace"),
    ):
        client.db.get("k")


@pytest.mark.parametrize(
    ("payload", "reason"), [(b"\x0a\x02\xff\xfe", "bad UTF-8"), (b"\xff\xff\xff", "corrupt")]
)
def test_malformed_messages_are_invalid_arguments(served: SharedDaemon, payload: bytes, reason: str) -> None:
    with grpc.insecure_channel(served.target) as channel:
        get: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/stord.v1.CacheService/Get"  # raw bytes, no serializer
        )
        with pytest.raises(grpc.RpcError) as failure:
            get(payload, timeout=5)
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "request: malformed message: " in (failure.value.details() or "")
    assert reason in (failure.value.details() or "")

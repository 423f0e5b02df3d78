"""Page tokens: one sealed codec for every listing.

Anything but a token issued for this very listing, namespace and query is INVALID_ARGUMENT naming
`page_token`, and a token pages on every daemon of one database.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct

from stord.server.config import Settings
from stord.server.ports import InvalidArgument
from stord.server.rpc.calls import NAMESPACE_METADATA
from stord.server.rpc.page_tokens import PageTokens, new_key
from stord.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    documents_pb2,
    documents_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    kv_pb2,
    kv_pb2_grpc,
    manifests_pb2,
    manifests_pb2_grpc,
)
from tests.conftest import Daemons, make_backend_url
from tests.harness.daemon import DaemonThread

# The codec itself ------------------------------------------------------------------------------------------

_REQUEST = documents_pb2.ListDocumentsRequest(collection="c")


def _refused(open_token: Callable[[], object]) -> None:
    with pytest.raises(InvalidArgument) as raised:
        open_token()
    assert raised.value.field == "page_token"


def test_a_token_resumes_where_it_was_issued() -> None:
    tokens = PageTokens(new_key())
    token = tokens.issue(_REQUEST, "ns", 2**63 - 1, "ключ ✓")
    request = documents_pb2.ListDocumentsRequest(collection="c", page_token=token, page_size=7, offset=0)
    assert tokens.resume(request, "ns", int, str) == (2**63 - 1, "ключ ✓")
    assert tokens.resume(_REQUEST, "ns", int) is None  # no token: the first page
    assert token.isascii()
    assert "=" not in token


def test_every_altered_byte_and_every_truncation_is_refused() -> None:
    tokens = PageTokens(new_key())
    token = tokens.issue(_REQUEST, "ns", 12345)
    sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    forged: list[str] = []
    for index in range(len(sealed)):
        for flip in (0x01, 0x80):
            altered = bytearray(sealed)
            altered[index] ^= flip
            forged.append(base64.urlsafe_b64encode(bytes(altered)).decode().rstrip("="))
    forged += [token[:cut] for cut in range(1, len(token))]
    forged += [token + "A", token + "=", " " + token, token.upper(), "٣" + token[1:], "x" * 10_000]
    for candidate in forged:
        with pytest.raises(InvalidArgument) as raised:
            tokens.resume(documents_pb2.ListDocumentsRequest(collection="c", page_token=candidate), "ns", int)
        assert raised.value.field == "page_token"


def test_a_token_is_bound_to_its_namespace_listing_query_key_and_shape() -> None:
    tokens = PageTokens(new_key())
    token = tokens.issue(_REQUEST, "ns", 5)
    mine = documents_pb2.ListDocumentsRequest(collection="c", page_token=token)
    other_query = documents_pb2.ListDocumentsRequest(collection="d", page_token=token)
    other_listing = jobs_pb2.ListJobsRequest(queue="c", page_token=token)
    _refused(lambda: tokens.resume(mine, "other", int))
    _refused(lambda: tokens.resume(other_query, "ns", int))
    _refused(lambda: tokens.resume(other_listing, "ns", int))
    _refused(lambda: PageTokens(new_key()).resume(mine, "ns", int))
    _refused(lambda: tokens.resume(mine, "ns", str))
    _refused(lambda: tokens.resume(mine, "ns", int, int))


def test_a_token_of_another_version_is_refused() -> None:
    tokens = PageTokens(new_key())
    sealed = bytearray(base64.urlsafe_b64decode(tokens.issue(_REQUEST, "ns", 5) + "=="))
    sealed[0] = 2
    token = base64.urlsafe_b64encode(bytes(sealed)).decode()
    _refused(
        lambda: tokens.resume(documents_pb2.ListDocumentsRequest(collection="c", page_token=token), "ns", int)
    )


# Every listing of every contract, through the API --------------------------------------------------------


@dataclass
class Listing:
    """A listing with more than one page in a fresh namespace: `seed` writes it, `request` asks for page 1."""

    name: str
    seed: Callable[[grpc.Channel, Any], None]
    call: Callable[[grpc.Channel], Callable[..., Any]]
    request: Callable[[], Message]
    other_query: Callable[[], Message]


def _seed_documents(channel: grpc.Channel, md: Any) -> None:
    stub = documents_pb2_grpc.DocumentServiceStub(channel)
    for _ in range(3):
        stub.CreateDocument(documents_pb2.CreateDocumentRequest(collection="c", data=Struct()), metadata=md)


def _seed_jobs(channel: grpc.Channel, md: Any) -> None:
    jobs = [jobs_pb2.NewJob(queue="q", payload=Struct()) for _ in range(3)]
    jobs_pb2_grpc.JobQueueServiceStub(channel).Enqueue(jobs_pb2.EnqueueRequest(jobs=jobs), metadata=md)


def _seed_agents(channel: grpc.Channel, md: Any) -> None:
    stub = agents_pb2_grpc.AgentStoreServiceStub(channel)
    for index in range(3):
        agent = agents_pb2.StoredAgent(
            uri=f"agent://{index}",
            name=f"a{index}",
            version="1",
            status=agents_pb2.STORED_AGENT_STATUS_ACTIVE,
            visibility=agents_pb2.STORED_AGENT_VISIBILITY_PUBLIC,
        )
        stub.SetAgent(agents_pb2.AgentStoreServiceSetAgentRequest(agent=agent), metadata=md)


def _seed_manifests(channel: grpc.Channel, md: Any) -> None:
    stub = manifests_pb2_grpc.ManifestStoreServiceStub(channel)
    for index in range(3):
        manifest = manifests_pb2.HandlerManifest(handler_id="h", version=f"{index}")
        stub.StoreManifest(
            manifests_pb2.ManifestStoreServiceStoreManifestRequest(manifest=manifest), metadata=md
        )
        hook = manifests_pb2.HookManifest(handler_id=f"h{index}")
        stub.StoreHookManifest(
            manifests_pb2.ManifestStoreServiceStoreHookManifestRequest(hook_manifest=hook), metadata=md
        )


def _seed_events(channel: grpc.Channel, md: Any) -> None:
    stub = events_pb2_grpc.EventStoreServiceStub(channel)
    events = [
        events_pb2.Event(
            session_id=f"s{index % 2}",
            agent_id=f"a{index}",
            event_type=events_pb2.EVENT_TYPE_CUSTOM,
            severity=events_pb2.SEVERITY_INFO,
        )
        for index in range(4)
    ]
    for event in events:
        stub.InsertEvents(events_pb2.InsertEventsRequest(events=[event]), metadata=md)
    for index in range(3):
        rule = events_pb2.AlertRule(
            id=f"r{index}",
            name="errors",
            enabled=True,
            condition=events_pb2.ALERT_CONDITION_ERROR_RATE_EXCEEDS,
            threshold=0.1,
            window_minutes=15,
        )
        stub.CreateAlertRule(events_pb2.CreateAlertRuleRequest(rule=rule), metadata=md)
        entry = events_pb2.AlertHistoryEntry(rule_id="r0", current_value=1, threshold=1)
        stub.RecordAlert(events_pb2.RecordAlertRequest(entry=entry), metadata=md)


def _seed_keys(
    stub: Callable[[grpc.Channel], Any], message: Callable[..., Message]
) -> Callable[[grpc.Channel, Any], None]:
    def seed(channel: grpc.Channel, md: Any) -> None:
        for index in range(3):
            stub(channel).Set(message(key=f"k{index}", value=b"v"), metadata=md)

    return seed


_ev = events_pb2_grpc.EventStoreServiceStub
LISTINGS = [
    Listing("documents", _seed_documents, lambda ch: documents_pb2_grpc.DocumentServiceStub(ch).ListDocuments,
            lambda: documents_pb2.ListDocumentsRequest(collection="c", page_size=1),
            lambda: documents_pb2.ListDocumentsRequest(collection="d", page_size=1)),
    Listing("jobs", _seed_jobs, lambda ch: jobs_pb2_grpc.JobQueueServiceStub(ch).ListJobs,
            lambda: jobs_pb2.ListJobsRequest(queue="q", page_size=1),
            lambda: jobs_pb2.ListJobsRequest(queue="r", page_size=1)),
    Listing("agents", _seed_agents, lambda ch: agents_pb2_grpc.AgentStoreServiceStub(ch).SearchAgents,
            lambda: agents_pb2.AgentStoreServiceSearchAgentsRequest(page_size=1),
            lambda: agents_pb2.AgentStoreServiceSearchAgentsRequest(query="a", page_size=1)),
    Listing("manifest-versions", _seed_manifests,
            lambda ch: manifests_pb2_grpc.ManifestStoreServiceStub(ch).ListManifestVersions,
            lambda: manifests_pb2.ManifestStoreServiceListManifestVersionsRequest(handler_id="h", page_size=1),  # noqa: E501
            lambda: manifests_pb2.ManifestStoreServiceListManifestVersionsRequest(handler_id="i")),
    Listing("hook-manifests", _seed_manifests,
            lambda ch: manifests_pb2_grpc.ManifestStoreServiceStub(ch).ListHookManifests,
            lambda: manifests_pb2.ManifestStoreServiceListHookManifestsRequest(page_size=1),
            lambda: manifests_pb2.ManifestStoreServiceListManifestVersionsRequest(handler_id="h")),
    Listing("events", _seed_events, lambda ch: _ev(ch).QueryEvents,
            lambda: events_pb2.QueryEventsRequest(page_size=1),
            lambda: events_pb2.QueryEventsRequest(order=events_pb2.SORT_ORDER_ASCENDING)),
    Listing("timeline", _seed_events, lambda ch: _ev(ch).GetSessionTimeline,
            lambda: events_pb2.GetSessionTimelineRequest(session_id="s0", page_size=1),
            lambda: events_pb2.GetSessionTimelineRequest(session_id="s1", page_size=1)),
    Listing("sessions", _seed_events, lambda ch: _ev(ch).QuerySessions,
            lambda: events_pb2.QuerySessionsRequest(page_size=1),
            lambda: events_pb2.QuerySessionsRequest(page_size=1, agent_id="a0")),
    Listing("event-agents", _seed_events, lambda ch: _ev(ch).ListAgents,
            lambda: events_pb2.ListAgentsRequest(page_size=1),
            lambda: events_pb2.ListAlertRulesRequest(page_size=1)),
    Listing("alert-rules", _seed_events, lambda ch: _ev(ch).ListAlertRules,
            lambda: events_pb2.ListAlertRulesRequest(page_size=1),
            lambda: events_pb2.ListAgentsRequest(page_size=1)),
    Listing("alert-history", _seed_events, lambda ch: _ev(ch).ListAlertHistory,
            lambda: events_pb2.ListAlertHistoryRequest(page_size=1),
            lambda: events_pb2.ListAlertHistoryRequest(page_size=1, rule_id="r0")),
    Listing("db-keys", _seed_keys(kv_pb2_grpc.DatabaseServiceStub, kv_pb2.DatabaseServiceSetRequest),
            lambda ch: kv_pb2_grpc.DatabaseServiceStub(ch).Keys,
            lambda: kv_pb2.DatabaseServiceKeysRequest(page_size=1),
            lambda: kv_pb2.DatabaseServiceKeysRequest(pattern="k*", page_size=1)),
    Listing("cache-keys", _seed_keys(kv_pb2_grpc.CacheServiceStub, kv_pb2.CacheServiceSetRequest),
            lambda ch: kv_pb2_grpc.CacheServiceStub(ch).Keys,
            lambda: kv_pb2.CacheServiceKeysRequest(page_size=1),
            lambda: kv_pb2.CacheServiceKeysRequest(pattern="k*", page_size=1)),
]  # fmt: skip


def _metadata() -> tuple[tuple[str, str]]:
    return ((NAMESPACE_METADATA, f"t-{uuid.uuid4().hex[:12]}"),)


def _with_token(message: Message, token: str) -> Message:
    copy = type(message)()
    copy.CopyFrom(message)
    copy.MergeFrom(type(message)(page_token=token))  # type: ignore[call-arg]  # every listing has one
    return copy


def _assert_refused(call: Callable[..., Any], request: Message, metadata: Any) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, metadata=metadata)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert "page_token" in (raised.value.details() or "")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def channel(request: pytest.FixtureRequest, daemons: Daemons) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(daemons.get(request.param).target) as opened:
        yield opened


@pytest.mark.parametrize("listing", LISTINGS, ids=[listing.name for listing in LISTINGS])
def test_every_listing_refuses_altered_and_foreign_tokens(channel: grpc.Channel, listing: Listing) -> None:
    metadata = _metadata()
    listing.seed(channel, metadata)
    call = listing.call(channel)
    token = call(listing.request(), metadata=metadata).next_page_token
    assert token, "the seed leaves more than one page"
    assert call(_with_token(listing.request(), token), metadata=metadata) is not None  # resumes
    sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for index in (0, 1, len(sealed) // 2, len(sealed) - 1):
        altered = bytearray(sealed)
        altered[index] ^= 0x01
        forged = base64.urlsafe_b64encode(bytes(altered)).decode().rstrip("=")
        _assert_refused(call, _with_token(listing.request(), forged), metadata)
    for forged in (
        token[:-3],
        "MTI",
        "٣",
        "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),
        "9" * 40,
    ):
        _assert_refused(call, _with_token(listing.request(), forged), metadata)
    _assert_refused(call, _with_token(listing.request(), token), _metadata())  # another namespace
    other = listing.other_query()
    if type(other) is type(listing.request()):
        _assert_refused(call, _with_token(other, token), metadata)  # another query of the listing


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "redis"])
def test_a_token_from_one_daemon_pages_on_another_over_the_same_database(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_backend_url(request, backend, tmp_path)
    daemons = [
        DaemonThread(Settings(listen="127.0.0.1:0", database=url, cache=url, log_level="warning")).start()
        for _ in range(2)
    ]
    try:
        metadata = _metadata()
        first, second = (grpc.insecure_channel(daemon.target) for daemon in daemons)
        listing = next(listing for listing in LISTINGS if listing.name == "db-keys")
        listing.seed(first, metadata)
        page = listing.call(first)(listing.request(), metadata=metadata)
        rest = listing.call(second)(_with_token(listing.request(), page.next_page_token), metadata=metadata)
        assert list(page.keys) == ["k0"]
        assert list(rest.keys) == ["k1"]
        first.close()
        second.close()
    finally:
        for daemon in daemons:
            daemon.stop()


def test_each_memory_daemon_seals_with_a_key_of_its_own() -> None:
    daemons = [
        DaemonThread(Settings(listen="127.0.0.1:0", database="memory://", log_level="warning")).start()
        for _ in range(2)
    ]
    try:
        metadata = _metadata()
        first, second = (grpc.insecure_channel(daemon.target) for daemon in daemons)
        listing = next(listing for listing in LISTINGS if listing.name == "db-keys")
        for channel in (first, second):
            listing.seed(channel, metadata)
        page = listing.call(first)(listing.request(), metadata=metadata)
        _assert_refused(listing.call(second), _with_token(listing.request(), page.next_page_token), metadata)
        first.close()
        second.close()
    finally:
        for daemon in daemons:
            daemon.stop()

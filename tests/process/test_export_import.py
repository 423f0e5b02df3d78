"""`stord export` and `stord import` as real processes: SQLite -> PostgreSQL -> SQLite, every read alike.

A SQLite daemon is filled through the gRPC API with data of every contract in two namespaces; `stord export`
dumps it while that daemon serves; `stord import` loads the dump into a throwaway PostgreSQL; a daemon on that
database must then answer every read RPC as the SQLite daemon did, response by response (page tokens, errors
and hash-chain verification included), and the way back into a new SQLite file must answer as PostgreSQL did.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pty
import re
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp

from stord.client import Client, EnqueueJob, make_event
from stord.server.backends._transfer import NAMESPACE_TABLES
from stord.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    documents_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    kv_pb2_grpc,
    manifests_pb2,
    manifests_pb2_grpc,
)
from stord.v1 import documents_pb2 as docs
from stord.v1 import events_pb2 as ev
from stord.v1 import kv_pb2 as kv
from stord.v1 import manifests_pb2 as mf
from tests.harness.postgres import PostgresServer
from tests.harness.redis import RedisServer
from tests.harness.served import STORD, Served

pytestmark = pytest.mark.process

MONDAY = datetime.datetime(2024, 6, 3, tzinfo=datetime.UTC)
NAMESPACES = ("alpha", "beta")
BULK_EVENTS = 1500
"""Events of `beta`'s bulk session: more than one import batch, so a late bad line comes after writes."""

Read = tuple[str, str, Message, str]
"""(service, method, request, principal): one read RPC, followed page by page when it pages."""

Answer = Message | tuple[str, str]
"""A response, or the status code name and details of an error."""


def stord(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STORD, *arguments], capture_output=True, text=True, timeout=timeout)


def at(minutes: float) -> datetime.datetime:
    return MONDAY + datetime.timedelta(minutes=minutes)


def timestamp(minutes: float) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(at(minutes))
    return message


def struct(values: dict[str, Any]) -> Struct:
    message = Struct()
    message.update(values)
    return message


# Filling a daemon with every contract's data ----------------------------------------------------------------


@dataclass
class Filled:
    """The keys of what one namespace holds, for the reads."""

    documents: list[tuple[str, str]] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    running_job: tuple[str, str] = ("", "")
    """The id and lease token of a job left running."""


def fill(address: str, namespace: str) -> Filled:
    filled = Filled()
    with Client(address, namespace=namespace) as client:
        _fill_key_value(client)
        _fill_documents(client, filled)
        _fill_jobs(client, filled)
        _fill_events(client, namespace, filled)
        _fill_manifests(client)
    registry: list[tuple[str | None, str, Literal["public", "private"]]] = [
        ("alice", "agent://planner", "public"),
        ("alice", "agent://secret", "private"),
        (None, "agent://anon", "public"),
        ("bob", "agent://gone", "public"),
        ("bob", "agent://bob", "private"),
    ]
    for principal, uri, visibility in registry:
        with Client(address, namespace=namespace, principal=principal) as client:
            configuration = {"model": "m", "tools": ["search"], "owner": principal}
            client.agents.set(
                uri, name=f"Agent {uri[8:]}", version="1", visibility=visibility, configuration=configuration
            )
    with Client(address, namespace=namespace, principal="alice") as alice:
        alice.agents.set("agent://planner", name="Planner", version="2", status="inactive")  # keeps its place
    with Client(address, namespace=namespace, principal="bob") as bob:
        assert bob.agents.delete("agent://gone")  # leaves a gap in the positions
    return filled


def _fill_key_value(client: Client) -> None:
    client.db.set_many({f"user:{index}": b"\x00\xffuser %d" % index for index in range(12)})
    client.db.delete("user:3")
    for index in range(25):
        client.db.append("audit", b"entry %d" % index)
    client.db.append("user:5", b"a list beside a value")
    client.cache.set("session:1", b"one", ttl=3600)
    client.cache.set("session:2", b"two")
    client.cache.set("flash", b"gone soon", ttl=0.2)
    deadline = time.monotonic() + 30
    while client.cache.get("flash") is not None:  # expired values are not exported
        assert time.monotonic() < deadline, "the flash value never expired"
        time.sleep(0.05)


def _fill_documents(client: Client, filled: Filled) -> None:
    for index in range(10):
        data = {"owner": {"name": ["ada", "bob", "cy"][index % 3]}, "cost": index * 1.5, "status": "draft"}
        document = client.documents.create("plans", data, id=f"plan-{index}")
        filled.documents.append(("plans", document.id))
    client.documents.update("plans", "plan-1", {"status": "ready"})
    client.documents.update("plans", "plan-1", {"status": "done", "tags": ["x"]}, expected_revision=2)
    client.documents.delete("plans", "plan-9")
    note = client.documents.create("notes", {"text": "hello", "n": None})
    filled.documents.append(("notes", note.id))
    filled.documents.append(("plans", "missing"))


def _fill_jobs(client: Client, filled: Filled) -> None:
    jobs = [
        EnqueueJob("mail", {"n": index}, priority=index % 3, max_attempts=1 if index == 4 else 3)
        for index in range(8)
    ]
    jobs.append(EnqueueJob("mail", {"n": "later"}, delay=3600, dedupe_key="later"))
    jobs.append(EnqueueJob("thumbs", {"size": 64}))
    filled.jobs = [job.job_id for job in client.jobs.enqueue_many(jobs)] + ["missing"]
    done = client.jobs.dequeue("mail", max_jobs=2, lease=600)
    client.jobs.acknowledge(done)
    (failed,) = client.jobs.dequeue("mail", lease=600)
    client.jobs.fail(failed, "bad input", retry=False)
    (dead,) = client.jobs.dequeue("mail", lease=600)  # its only attempt: failed for good
    assert client.jobs.fail(dead, "try again").status == "failed"
    (retried,) = client.jobs.dequeue("mail", lease=600)
    assert client.jobs.fail(retried, "try again").status == "retrying"
    (running,) = client.jobs.dequeue("mail", lease=600)
    assert running.lease_token is not None
    filled.running_job = (running.id, running.lease_token)


def _fill_events(client: Client, namespace: str, filled: Filled) -> None:
    events = client.events
    for session, agent in [("s1", "agent-1"), ("s2", "agent-2")]:
        batch = [
            make_event(
                session,
                agent,
                "session_started",
                at=at(0),
                payload={"agentName": agent.title(), "tags": ["prod", session]},
            ),
            make_event(session, agent, "tool_call", at=at(1), payload={"toolName": "search", "q": "a%b_c"}),
            make_event(session, agent, "tool_response", at=at(2), payload={"durationMs": 120}),
            make_event(session, agent, "cost_tracked", at=at(3), payload={"costUsd": 0.25}),
            make_event(
                session, agent, "tool_error", severity="error", at=at(65), payload={"error": "timeout"}
            ),
            make_event(session, agent, "custom", at=at(60 * 30), metadata={"k": "v"}),
        ]
        if session == "s1":
            batch.append(
                make_event(session, agent, "session_ended", at=at(60 * 31), payload={"reason": "error"})
            )
        filled.events += [stored.id for stored in events.insert(batch[:3]).events]
        filled.events += [stored.id for stored in events.insert(batch[3:]).events]
    if namespace == "beta":
        for start in range(0, BULK_EVENTS, 500):
            bulk = [
                make_event(
                    "bulk", "agent-3", "tool_response", at=at(index / 60), payload={"durationMs": index}
                )
                for index in range(start, start + 500)
            ]
            events.insert(bulk)
    filled.events.append("missing")
    events.upsert_session(
        "s3", agent_id="agent-2", agent_name="Manual", start_time=at(5), status="completed", tags=["manual"]
    )
    events.upsert_agent("agent-1", description="plans things")
    scope = events_pb2.AlertScope(agent_id="agent-1", tags=["prod"])
    for rule_id, condition in [("r1", "ERROR_RATE_EXCEEDS"), ("r2", "COST_EXCEEDS")]:
        events.create_alert_rule(
            events_pb2.AlertRule(
                id=rule_id,
                name=f"rule {rule_id}",
                enabled=True,
                condition=events_pb2.AlertCondition.Value(f"ALERT_CONDITION_{condition}"),
                threshold=0.5,
                window_minutes=10,
                scope=scope,
                notify_channels=["pager"],
            )
        )
    events.update_alert_rule(
        events_pb2.AlertRule(id="r2", threshold=2.5, enabled=False), fields=["threshold", "enabled"]
    )
    for entry_id, rule_id, minutes in [("h1", "r1", 10), ("h2", "r1", 20), ("h3", "r2", 15)]:
        events.record_alert(
            events_pb2.AlertHistoryEntry(
                id=entry_id,
                rule_id=rule_id,
                triggered_time=timestamp(minutes),
                current_value=0.75,
                threshold=0.5,
                message=f"{rule_id} fired",
                resolved_time=timestamp(minutes + 1) if entry_id == "h1" else None,
            )
        )


def _fill_manifests(client: Client) -> None:
    manifests = client.manifests
    for version, seconds in [("1.0.0", 100), ("2.0.0", 200), ("1.5.0", 300), ("1.5.1", 300)]:
        manifests.store_manifest(
            manifests_pb2.HandlerManifest(
                handler_id="users.create",
                version=version,
                path="/users",
                methods=["POST"],
                create_time=Timestamp(seconds=seconds, nanos=7),
            )
        )
    manifests.store_manifest(manifests_pb2.HandlerManifest(handler_id="orders.list", version="1"))
    hook = manifests_pb2.HookDefinition(
        id="auth",
        type=manifests_pb2.HOOK_TYPE_BEFORE,
        level=manifests_pb2.HOOK_LEVEL_HANDLER,
        timeout=Duration(seconds=2),
        retries=0,
    )
    for handler_id in ("users.create", "orders.list", "auth.login"):
        manifests.store_hook_manifest(
            manifests_pb2.HookManifest(handler_id=handler_id, hooks=[hook], version="1")
        )
    manifests.store_gtype(
        manifests_pb2.GType(
            ref="User",
            object=manifests_pb2.GTypeObject(
                properties=[
                    manifests_pb2.GTypeProperty(
                        name="email",
                        type=manifests_pb2.GType(primitive=manifests_pb2.G_TYPE_PRIMITIVE_STRING),
                    )
                ],
                required=["email"],
            ),
        )
    )
    for transformer_id, to_version in [("t:b", "2.0.0"), ("t:a", "2.0.0"), ("t:c", "1.5.0")]:
        manifests.store_transformer(
            manifests_pb2.Transformer(
                id=transformer_id,
                handler_id="users.create",
                from_version="1.0.0",
                to_version=to_version,
                direction=manifests_pb2.TRANSFORMER_DIRECTION_FORWARD,
                hash="h",
                create_time=Timestamp(seconds=5),
                transformations=[
                    manifests_pb2.Transformation(
                        path="user.mail",
                        type=manifests_pb2.TRANSFORMATION_TYPE_RENAME,
                        details=struct({"newName": "email", "weight": 0.5}),
                    )
                ],
            )
        )
    manifests.store_version_graph(
        manifests_pb2.VersionGraph(
            handler_id="users.create",
            current_version="2.0.0",
            latest_version="2.0.0",
            versions=[
                manifests_pb2.VersionNode(
                    version="1.0.0", manifest_hash="h1", deploy_time=Timestamp(seconds=9), active=False
                )
            ],
        )
    )
    manifests.store_timescape_metadata(
        manifests_pb2.TimescapeMetadata(
            handler_id="users.create",
            version="2.0.0",
            fingerprint="fp",
            deployment=manifests_pb2.TimescapeDeployment(
                strategy=manifests_pb2.DEPLOYMENT_STRATEGY_CANARY,
                rollout_percentage=0,
                status=manifests_pb2.DEPLOYMENT_STATUS_ACTIVE,
            ),
        )
    )


# Every read RPC ---------------------------------------------------------------------------------------------


def reads(filled: Filled) -> list[Read]:
    """Return the read RPCs that cover every contract's data in a namespace filled by `fill`."""
    keys = [f"user:{index}" for index in range(13)] + ["audit", "session:1", "session:2", "flash"]
    result: list[Read] = []
    for key in keys:
        result += [
            ("db", "Get", kv.DatabaseServiceGetRequest(key=key), ""),
            ("db", "Exists", kv.DatabaseServiceExistsRequest(key=key), ""),
            ("db", "GetLength", kv.DatabaseServiceGetLengthRequest(key=key), ""),
            ("cache", "Get", kv.CacheServiceGetRequest(key=key), ""),
            ("cache", "Exists", kv.CacheServiceExistsRequest(key=key), ""),
        ]
    result += [
        ("db", "MGet", kv.DatabaseServiceMGetRequest(keys=keys), ""),
        ("db", "Keys", kv.DatabaseServiceKeysRequest(pattern="*", page_size=5), ""),
        ("db", "Keys", kv.DatabaseServiceKeysRequest(pattern="user:1?"), ""),
        ("db", "GetRange", kv.DatabaseServiceGetRangeRequest(key="audit", start=0, count=10), ""),
        ("db", "GetRange", kv.DatabaseServiceGetRangeRequest(key="audit", start=-4, count=10), ""),
        ("db", "GetRange", kv.DatabaseServiceGetRangeRequest(key="user:5", start=0, count=10), ""),
        ("cache", "MGet", kv.CacheServiceMGetRequest(keys=keys), ""),
        ("cache", "Keys", kv.CacheServiceKeysRequest(pattern="*", page_size=1), ""),
    ]
    for collection, document_id in filled.documents:
        result.append(
            (
                "docs",
                "GetDocument",
                docs.GetDocumentRequest(collection=collection, document_id=document_id),
                "",
            )
        )
    cheap = docs.DocumentFilter(field="cost", operator=docs.FILTER_OPERATOR_LT, value=Value(number_value=9))
    result += [
        ("docs", "ListDocuments", docs.ListDocumentsRequest(collection="plans", page_size=4), ""),
        (
            "docs",
            "ListDocuments",
            docs.ListDocumentsRequest(
                collection="plans",
                filters=[cheap],
                order_by=[docs.DocumentOrder(field="owner.name", descending=True)],
                page_size=3,
            ),
            "",
        ),
        ("docs", "ListDocuments", docs.ListDocumentsRequest(collection="notes"), ""),
        ("docs", "CountDocuments", docs.CountDocumentsRequest(collection="plans", filters=[cheap]), ""),
        ("docs", "CountDocuments", docs.CountDocumentsRequest(collection="notes"), ""),
    ]
    result += [("jobs", "GetJob", jobs_pb2.GetJobRequest(job_id=job_id), "") for job_id in filled.jobs]
    for queue in ("mail", "thumbs", "none"):
        result += [
            ("jobs", "ListJobs", jobs_pb2.ListJobsRequest(queue=queue, page_size=3), ""),
            ("jobs", "GetQueueStats", jobs_pb2.GetQueueStatsRequest(queue=queue), ""),
        ]
    unfinished = [jobs_pb2.JOB_STATUS_FAILED, jobs_pb2.JOB_STATUS_RETRYING, jobs_pb2.JOB_STATUS_RUNNING]
    result.append(("jobs", "ListJobs", jobs_pb2.ListJobsRequest(queue="mail", statuses=unfinished), ""))
    result += [("ev", "GetEvent", ev.GetEventRequest(id=event_id), "") for event_id in filled.events]
    filters = [
        ev.EventFilter(),
        ev.EventFilter(session_id="s1"),
        ev.EventFilter(agent_id="agent-2", event_types=[ev.EVENT_TYPE_TOOL_ERROR, ev.EVENT_TYPE_CUSTOM]),
        ev.EventFilter(severities=[ev.SEVERITY_ERROR], from_time=timestamp(0), to_time=timestamp(65)),
        ev.EventFilter(search="A%B_"),
        ev.EventFilter(search="SEARCH"),  # through SQLite's search index, which the import fills
    ]
    for event_filter in filters:
        result += [
            ("ev", "QueryEvents", ev.QueryEventsRequest(filter=event_filter, page_size=7), ""),
            (
                "ev",
                "QueryEvents",
                ev.QueryEventsRequest(
                    filter=event_filter, order=ev.SORT_ORDER_ASCENDING, offset=2, page_size=3
                ),
                "",
            ),
            ("ev", "CountEvents", ev.CountEventsRequest(filter=event_filter), ""),
        ]
    for session in ("s1", "s2", "s3", "bulk", "missing"):
        result += [
            ("ev", "GetSessionTimeline", ev.GetSessionTimelineRequest(session_id=session, page_size=200), ""),
            ("ev", "VerifySessionChain", ev.VerifySessionChainRequest(session_id=session), ""),
            ("ev", "GetSession", ev.GetSessionRequest(id=session), ""),
        ]
    week = {"from_time": timestamp(-60), "to_time": timestamp(60 * 24 * 8)}
    result += [  # from the rollups an import rebuilds
        ("ev", "GetAnalytics", ev.GetAnalyticsRequest(**week, granularity=granularity, agent_id=agent), "")
        for granularity in (ev.GRANULARITY_HOUR, ev.GRANULARITY_DAY, ev.GRANULARITY_WEEK)
        for agent in ("", "agent-2")
    ]
    result += [
        ("ev", "QuerySessions", ev.QuerySessionsRequest(page_size=2), ""),
        (
            "ev",
            "QuerySessions",
            ev.QuerySessionsRequest(
                tags=["manual", "s1"], statuses=[ev.SESSION_STATUS_ERROR, ev.SESSION_STATUS_COMPLETED]
            ),
            "",
        ),
        ("ev", "ListAgents", ev.ListAgentsRequest(page_size=1), ""),
        ("ev", "GetAgent", ev.GetAgentRequest(id="agent-1"), ""),
        ("ev", "GetAgent", ev.GetAgentRequest(id="nobody"), ""),
        ("ev", "ListAlertRules", ev.ListAlertRulesRequest(page_size=1), ""),
        ("ev", "GetAlertRule", ev.GetAlertRuleRequest(id="r2"), ""),
        ("ev", "ListAlertHistory", ev.ListAlertHistoryRequest(page_size=2), ""),
        ("ev", "ListAlertHistory", ev.ListAlertHistoryRequest(rule_id="r1"), ""),
        ("ev", "GetStats", ev.GetStatsRequest(), ""),
    ]
    for granularity in (ev.GRANULARITY_HOUR, ev.GRANULARITY_DAY, ev.GRANULARITY_WEEK):
        for agent_id in ("", "agent-1"):
            result.append(
                (
                    "ev",
                    "GetAnalytics",
                    ev.GetAnalyticsRequest(
                        from_time=timestamp(-60 * 24 * 8),
                        to_time=timestamp(60 * 24),
                        granularity=granularity,
                        agent_id=agent_id,
                    ),
                    "",
                )
            )
    for principal in ("", "alice", "bob"):
        for uri in ("agent://planner", "agent://secret", "agent://anon", "agent://gone", "agent://bob"):
            result.append(
                ("agents", "GetAgent", agents_pb2.AgentStoreServiceGetAgentRequest(uri=uri), principal)
            )
        result += [
            (
                "agents",
                "SearchAgents",
                agents_pb2.AgentStoreServiceSearchAgentsRequest(page_size=2),
                principal,
            ),
            (
                "agents",
                "SearchAgents",
                agents_pb2.AgentStoreServiceSearchAgentsRequest(query="SEARCH"),
                principal,
            ),
        ]
    result += [
        ("mf", "GetManifest", mf.ManifestStoreServiceGetManifestRequest(handler_id="users.create"), ""),
        (
            "mf",
            "GetManifest",
            mf.ManifestStoreServiceGetManifestRequest(handler_id="users.create", version="2.0.0"),
            "",
        ),
        (
            "mf",
            "ListManifestVersions",
            mf.ManifestStoreServiceListManifestVersionsRequest(handler_id="users.create", page_size=3),
            "",
        ),
        (
            "mf",
            "GetHookManifest",
            mf.ManifestStoreServiceGetHookManifestRequest(handler_id="orders.list"),
            "",
        ),
        ("mf", "ListHookManifests", mf.ManifestStoreServiceListHookManifestsRequest(page_size=2), ""),
        ("mf", "GetGType", mf.ManifestStoreServiceGetGTypeRequest(ref="User"), ""),
        ("mf", "GetTransformer", mf.ManifestStoreServiceGetTransformerRequest(id="t:a"), ""),
        (
            "mf",
            "GetTransformersForVersions",
            mf.ManifestStoreServiceGetTransformersForVersionsRequest(
                handler_id="users.create", from_version="1.0.0", to_version="2.0.0"
            ),
            "",
        ),
        (
            "mf",
            "GetVersionGraph",
            mf.ManifestStoreServiceGetVersionGraphRequest(handler_id="users.create"),
            "",
        ),
        (
            "mf",
            "GetTimescapeMetadata",
            mf.ManifestStoreServiceGetTimescapeMetadataRequest(handler_id="users.create", version="2.0.0"),
            "",
        ),
        ("mf", "GetStats", mf.ManifestStoreServiceGetStatsRequest(), ""),
    ]
    return result


def answers(address: str, namespace: str, requests: list[Read]) -> list[tuple[str, list[Answer]]]:
    """Call every read on a daemon, following page tokens; return each read's responses by a label."""
    with grpc.insecure_channel(address) as channel:
        stubs = {
            "db": kv_pb2_grpc.DatabaseServiceStub(channel),
            "cache": kv_pb2_grpc.CacheServiceStub(channel),
            "docs": documents_pb2_grpc.DocumentServiceStub(channel),
            "jobs": jobs_pb2_grpc.JobQueueServiceStub(channel),
            "ev": events_pb2_grpc.EventStoreServiceStub(channel),
            "agents": agents_pb2_grpc.AgentStoreServiceStub(channel),
            "mf": manifests_pb2_grpc.ManifestStoreServiceStub(channel),
        }
        return [
            (
                f"{service}.{method}({request}) as {principal!r}".replace("\n", " "),
                _pages(getattr(stubs[service], method), request, namespace, principal),
            )
            for service, method, request, principal in requests
        ]


def _pages(call: Any, request: Message, namespace: str, principal: str) -> list[Answer]:
    metadata = [("stord-namespace", namespace)] + ([("stord-principal", principal)] if principal else [])
    pages: list[Answer] = []
    while True:
        try:
            response = call(request, metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return [*pages, (error.code().name, error.details() or "")]
        if isinstance(response, events_pb2.GetStatsResponse):
            response.ClearField("storage_size_bytes")  # the engine's file or relation sizes, not data
        pages.append(response)
        token = getattr(response, "next_page_token", "")
        if not token or len(pages) > 100:
            return pages
        request = type(request).FromString(request.SerializeToString())
        request.page_token = token  # type: ignore[attr-defined]


def align_times(expected: Message, actual: Message) -> None:
    """Give `expected` the Timestamps of `actual` that are within 1 us of its own.

    PostgreSQL keeps document and job times to the microsecond, SQLite as a double: exporting from SQLite
    rounds them to the microsecond and leaves every other value as it was.
    """
    if isinstance(expected, Timestamp) and isinstance(actual, Timestamp):
        if abs(expected.ToNanoseconds() - actual.ToNanoseconds()) <= 1000:
            expected.CopyFrom(actual)
        return
    if type(expected) is not type(actual):
        return
    for descriptor in expected.DESCRIPTOR.fields:
        if descriptor.message_type is None or descriptor.message_type.GetOptions().map_entry:
            continue
        mine, theirs = getattr(expected, descriptor.name), getattr(actual, descriptor.name)
        if not isinstance(mine, Message):  # a repeated field
            for item, other in zip(mine, theirs, strict=False):
                align_times(item, other)
        elif expected.HasField(descriptor.name) and actual.HasField(descriptor.name):
            align_times(mine, theirs)


def align_page_tokens(expected: Any, actual: Any) -> None:
    """Give `expected` the next_page_token of `actual` when both have one.

    Page tokens are sealed with a key of each database's own, so the same page has another token there.
    """
    if "next_page_token" in expected.DESCRIPTOR.fields_by_name and type(expected) is type(actual):
        theirs = actual.next_page_token
        if expected.next_page_token and theirs:
            expected.next_page_token = theirs


def assert_same_answers(
    expected: list[tuple[str, list[Answer]]], actual: list[tuple[str, list[Answer]]], *, exact: bool
) -> None:
    assert len(expected) == len(actual)
    for (label, wanted), (_, got) in zip(expected, actual, strict=True):
        for want, have in zip(wanted, got, strict=False):
            if isinstance(want, Message) and isinstance(have, Message):
                align_page_tokens(want, have)
                if not exact:
                    align_times(want, have)
        assert got == wanted, label


def chains_are_valid(found: list[tuple[str, list[Answer]]], sessions: int) -> None:
    """Check that every session with events has a valid chain."""
    verified = [
        page
        for label, pages in found
        if "VerifySessionChain" in label
        for page in pages
        if isinstance(page, events_pb2.VerifySessionChainResponse) and page.checked_events
    ]
    assert len(verified) == sessions
    assert all(page.valid for page in verified)


# Fixtures: the filled SQLite daemon, its export, the PostgreSQL it was imported into ------------------------


@dataclass
class Source:
    served: Served
    data_dir: Path
    filled: dict[str, Filled]
    answers: dict[str, list[tuple[str, list[Answer]]]]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    data_dir = tmp_path_factory.mktemp("source") / "data"
    sqlite = f"sqlite:///{data_dir / 'stord.db'}"
    # The cache role in the same file, so it is exported too; retention off, since the events are from 2024.
    served = Served(data_dir, "--cache", sqlite, "--retention-days", "0")
    try:
        filled = {namespace: fill(served.address, namespace) for namespace in NAMESPACES}
        with Client(served.address, namespace="gamma") as client:
            client.db.set("only", b"gamma")
        found = {
            namespace: answers(served.address, namespace, reads(filled[namespace]))
            for namespace in NAMESPACES
        }
        yield Source(served, data_dir, filled, found)
    finally:
        served.stop()


@pytest.fixture(scope="module")
def dump(source: Source) -> tuple[Path, str]:
    """Export every namespace while the source daemon serves; return the file and the summary on stderr."""
    path = source.data_dir.parent / "all.jsonl"
    exported = stord("export", "--data-dir", str(source.data_dir), "-o", str(path))
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == ""
    return path, exported.stderr


@dataclass
class Target:
    url: str
    served: Served
    data_dir: Path


@pytest.fixture(scope="module")
def postgres_target(
    postgres_server: PostgresServer, dump: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    url = postgres_server.create_database(f"stord_import_{os.getpid()}")
    imported = stord("import", "--database", url, "-i", str(dump[0]))
    assert imported.returncode == 0, imported.stderr
    data_dir = tmp_path_factory.mktemp("target") / "data"
    served = Served(data_dir, "--database", url, "--cache", url, "--retention-days", "0")
    yield Target(url, served, data_dir)
    served.stop()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# The tests --------------------------------------------------------------------------------------------------


def test_postgres_answers_every_read_as_sqlite_did(source: Source, postgres_target: Target) -> None:
    for namespace in NAMESPACES:
        found = answers(postgres_target.served.address, namespace, reads(source.filled[namespace]))
        assert_same_answers(source.answers[namespace], found, exact=False)
        chains_are_valid(found, sessions=3 if namespace == "beta" else 2)
    with Client(postgres_target.served.address, namespace="gamma") as client:
        assert client.db.get("only") == b"gamma"


def test_the_imported_state_takes_new_writes(source: Source, postgres_target: Target) -> None:
    job_id, token = source.filled["alpha"].running_job
    with Client(postgres_target.served.address, namespace="alpha") as client:
        # The worker that held the lease on SQLite acknowledges on PostgreSQL: the lease token moved too.
        ack = jobs_pb2.AcknowledgeRequest(leases=[jobs_pb2.JobLease(job_id=job_id, lease_token=token)])
        jobs_pb2_grpc.JobQueueServiceStub(client._channel).Acknowledge(ack, metadata=client._call.metadata)
        new_job = client.jobs.enqueue("mail", {"n": "new"})
        assert [job.id for job in client.jobs.find("mail")][
            -1
        ] == new_job  # sequences continue after the copies
        stored = client.events.insert([make_event("s2", "agent-2", "custom", payload={"after": "import"})])
        assert stored.events[0].chain_index == 6  # linked after the imported chain's head
        assert client.events.verify_chain("s2").valid
        client.documents.update("plans", "plan-1", {"status": "moved"}, expected_revision=3)


def test_the_way_back_into_sqlite_answers_exactly_as_postgres(
    source: Source, postgres_target: Target, tmp_path: Path
) -> None:
    path = tmp_path / "back.jsonl"
    exported = stord("export", "--database", postgres_target.url, "-o", str(path))
    assert exported.returncode == 0, exported.stderr
    data_dir = tmp_path / "back"
    imported = stord("import", "--data-dir", str(data_dir), "-i", str(path))
    assert imported.returncode == 0, imported.stderr
    served = Served(data_dir, "--cache", f"sqlite:///{data_dir / 'stord.db'}", "--retention-days", "0")
    try:
        for namespace in NAMESPACES:
            requests = reads(source.filled[namespace])
            expected = answers(postgres_target.served.address, namespace, requests)
            assert_same_answers(expected, answers(served.address, namespace, requests), exact=True)
    finally:
        served.stop()


def test_the_export_holds_every_kind_and_a_summary(dump: tuple[Path, str]) -> None:
    path, summary = dump
    records = lines(path)
    header, footer = records[0], records[-1]
    assert (header["kind"], header["format"], header["version"], header["source"]) == (
        "header",
        "stord-export",
        1,
        "sqlite",
    )
    assert header["namespace"] is None
    kinds = {record["kind"] for record in records[1:-1]}
    assert (
        kinds
        == set(footer["counts"])
        == {
            "kv_value",
            "kv_list_item",
            "document",
            "job",
            "event",
            "session",
            "event_agent",
            "alert_rule",
            "alert_history",
            "agent",
            "manifest",
            "transformer",
            "hook_manifest",
            "gtype",
            "version_graph",
            "timescape_metadata",
        }
    )
    assert footer["records"] == len(records) - 2
    assert {record["namespace"] for record in records[1:-1]} == {"alpha", "beta", "gamma"}
    assert not [record for record in records if record.get("key") == "flash"]  # expired before the export
    assert f"exported {len(records) - 2:,} records of 3 namespace(s)" in summary
    counted = dict(re.findall(r"^  (\w+) +([\d,]+)$", summary, re.MULTILINE))
    assert {kind: int(count.replace(",", "")) for kind, count in counted.items()} == footer["counts"]


def test_a_namespace_exports_alone(source: Source, dump: tuple[Path, str], tmp_path: Path) -> None:
    path = tmp_path / "beta.jsonl"
    exported = stord("export", "--data-dir", str(source.data_dir), "--namespace", "beta", "-o", str(path))
    assert exported.returncode == 0, exported.stderr
    records = lines(path)
    assert records[0]["namespace"] == "beta"
    assert {record["namespace"] for record in records[1:-1]} == {"beta"}
    everything = lines(dump[0])
    assert records[1:-1] == [record for record in everything[1:-1] if record["namespace"] == "beta"]


def _corrupt(path: Path, target: Path, line_number: int, change: Any) -> None:
    text = path.read_text().splitlines()
    text[line_number - 1] = change(text[line_number - 1])
    target.write_text("\n".join(text) + "\n")


def _last_line_of_kind(path: Path, kind: str) -> int:
    return max(number for number, record in enumerate(lines(path), 1) if record["kind"] == kind)


def rows_in_sqlite(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return sum(
            connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in NAMESPACE_TABLES
        )


def rows_in_postgres(url: str) -> int:
    with psycopg.connect(url) as connection:
        counts = [
            connection.execute(f"SELECT count(*) FROM {table}").fetchone() for table in NAMESPACE_TABLES
        ]
    return sum(count[0] for count in counts if count is not None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda line: line.replace('"hash":"', '"hash":7,"x":"'), "event: unknown field(s) x"),
        (
            lambda line: line.replace('"severity":"', '"severity":"loud'),
            "event: field 'severity' must be one of",
        ),
        (lambda line: line[: len(line) // 2], "not valid JSON"),
    ],
    ids=["field", "value", "json"],
)
def test_a_bad_line_late_in_the_file_names_it_and_imports_nothing(
    dump: tuple[Path, str], tmp_path: Path, change: Any, message: str
) -> None:
    bad = tmp_path / "bad.jsonl"
    number = _last_line_of_kind(dump[0], "event")
    assert number > 1000  # batches before it were written already, in the same transaction
    _corrupt(dump[0], bad, number, change)
    imported = stord("import", "--data-dir", str(tmp_path / "data"), "-i", str(bad))
    assert imported.returncode == 1
    assert f"line {number}: " in imported.stderr
    assert message in imported.stderr
    assert "nothing was imported" in imported.stderr
    assert rows_in_sqlite(tmp_path / "data" / "stord.db") == 0


def test_a_cut_short_file_imports_nothing_into_postgres(
    dump: tuple[Path, str], postgres_server: PostgresServer, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(dump[0].read_text().splitlines()[:-1]) + "\n")
    url = postgres_server.create_database(f"stord_cut_{os.getpid()}")
    imported = stord("import", "--database", url, "-i", str(cut))
    assert imported.returncode == 1
    assert "ends without its footer line" in imported.stderr
    assert rows_in_postgres(url) == 0


def test_a_namespace_holding_data_is_refused_unless_replaced(dump: tuple[Path, str], tmp_path: Path) -> None:
    database = ["--data-dir", str(tmp_path / "data")]
    assert stord("import", *database, "-i", str(dump[0])).returncode == 0
    again = stord("import", *database, "-i", str(dump[0]))
    assert again.returncode == 1
    assert "namespace 'alpha' of the target holds data already" in again.stderr
    assert "--replace" in again.stderr
    replaced = stord("import", *database, "--replace", "-i", str(dump[0]))
    assert replaced.returncode == 0, replaced.stderr
    back = tmp_path / "back.jsonl"
    assert stord("export", *database, "-o", str(back)).returncode == 0
    assert lines(back)[1:] == lines(dump[0])[1:]  # the same records, numbers included, in the same order


def subset(path: Path, target: Path, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Write the records of an export that `keep` keeps as an export of their own; return them."""
    records = lines(path)
    kept = [record for record in records[1:-1] if keep(record)]
    counts: dict[str, int] = {}
    for record in kept:
        counts[record["kind"]] = counts.get(record["kind"], 0) + 1
    footer = {"kind": "footer", "records": len(kept), "counts": counts}
    target.write_text("".join(json.dumps(line) + "\n" for line in [records[0], *kept, footer]))
    return kept


def test_numbers_move_past_those_the_target_holds(dump: tuple[Path, str], tmp_path: Path) -> None:
    database = ["--data-dir", str(tmp_path / "data")]
    alpha, beta = tmp_path / "alpha.jsonl", tmp_path / "beta.jsonl"
    subset(dump[0], alpha, lambda record: record["namespace"] == "alpha")
    subset(dump[0], beta, lambda record: record["namespace"] == "beta")
    for path in (beta, alpha):  # beta's jobs and agents come after alpha's in the source
        imported = stord("import", *database, "-i", str(path))
        assert imported.returncode == 0, imported.stderr
    back = tmp_path / "back.jsonl"
    assert stord("export", *database, "-o", str(back)).returncode == 0

    def numbers(path: Path, namespace: str, kind: str, column: str) -> list[tuple[str, int]]:
        found = [
            record
            for record in lines(path)[1:-1]
            if (record["kind"], record["namespace"]) == (kind, namespace)
        ]
        return [(record.get("id") or record["uri"], record[column]) for record in found]

    for kind, column in (("job", "sequence"), ("agent", "position")):
        assert numbers(back, "beta", kind, column) == numbers(
            dump[0], "beta", kind, column
        )  # kept: none there
        moved, source = numbers(back, "alpha", kind, column), numbers(dump[0], "alpha", kind, column)
        assert [key for key, _ in moved] == [key for key, _ in source]  # in the same order
        greatest = max(number for _, number in numbers(back, "beta", kind, column))
        assert [number for _, number in moved] == [number + greatest for _, number in source]


KEY_VALUE_KINDS = {"kv_value", "kv_list_item"}


def test_redis_takes_the_key_value_data_alone(
    source: Source, dump: tuple[Path, str], redis_server: RedisServer, tmp_path: Path
) -> None:
    refused = stord("import", "--database", redis_server.url, "-i", str(dump[0]))
    assert refused.returncode == 1
    assert "the redis backend stores only key-value data" in refused.stderr
    path = tmp_path / "kv.jsonl"
    key_value = subset(dump[0], path, lambda record: record["kind"] in KEY_VALUE_KINDS)
    # Nothing of the refused import stayed: this one would find its namespaces holding data.
    imported = stord("import", "--database", redis_server.url, "-i", str(path))
    assert imported.returncode == 0, imported.stderr
    served = Served(tmp_path / "data", "--database", redis_server.url, "--cache", redis_server.url)
    try:
        for namespace in NAMESPACES:
            requests = [read for read in reads(source.filled[namespace]) if read[0] in ("db", "cache")]
            expected = [
                answer for answer in source.answers[namespace] if answer[0].split(".")[0] in ("db", "cache")
            ]
            assert_same_answers(expected, answers(served.address, namespace, requests), exact=True)
    finally:
        served.stop()
    back = stord("export", "--database", redis_server.url, "--namespace", "alpha", "-o", "-")
    assert back.returncode == 0, back.stderr

    def rounded(record: dict[str, Any]) -> str:  # Redis keeps expiry times to the millisecond
        if record.get("expires_at") is not None:
            record["expires_at"] = round(record["expires_at"], 3)
        return json.dumps(record, sort_keys=True)

    exported = [json.loads(line) for line in back.stdout.splitlines()[1:-1]]
    assert sorted(map(rounded, exported)) == sorted(
        rounded(record) for record in key_value if record["namespace"] == "alpha"
    )


def test_memory_cannot_be_exported_or_imported(dump: tuple[Path, str]) -> None:
    imported = stord("import", "--database", "memory://", "-i", str(dump[0]))
    assert imported.returncode == 1
    assert "memory backend lives only inside the process that serves it" in imported.stderr


def test_a_terminal_gets_a_progress_bar(dump: tuple[Path, str], tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [STORD, "import", "--data-dir", str(tmp_path / "data"), "-i", str(dump[0])],
            stdout=subprocess.DEVNULL,
            stderr=terminal,
        )
        os.close(terminal)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=120) == 0
    finally:
        os.close(controller)
    text = output.decode()
    assert "\rimporting [" in text
    assert "100%" in text
    assert "records/s" in text
    assert "stord import: imported" in text


def test_a_refused_namespace_is_named_by_the_line_it_starts_at(tmp_path: Path) -> None:
    """A clash found while writing a batch of 1,000 cites the namespace's first line, not the batch's last."""
    header = {
        "kind": "header",
        "format": "stord-export",
        "version": 1,
        "created_at": "2026-11-22T02:15:25.561+00:00",
        "stord_version": "0.1.0",
        "source": "sqlite",
        "namespace": None,
    }
    values: list[dict[str, object]] = [
        {"kind": "kv_value", "namespace": namespace, "keyspace": "database", "key": f"k{index}"}
        | {"value": "AP8=", "expires_at": None}
        for namespace, count in (("first", 1500), ("second", 10))
        for index in range(count)
    ]
    records = [
        header,
        *values,
        {"kind": "footer", "records": len(values), "counts": {"kv_value": len(values)}},
    ]
    export = tmp_path / "values.jsonl"
    export.write_text("".join(json.dumps(record) + "\n" for record in records))
    database = ["--data-dir", str(tmp_path / "data")]
    assert stord("import", *database, "-i", str(export)).returncode == 0
    with (tmp_path / "other.jsonl").open("w") as other:  # only "second" is in the target now
        kept = [record for record in values if record["namespace"] == "second"]
        other.write(json.dumps(header) + "\n" + "".join(json.dumps(record) + "\n" for record in kept))
        other.write(json.dumps({"kind": "footer", "records": 10, "counts": {"kv_value": 10}}) + "\n")
    again = stord("import", *database, "-i", str(export))
    assert again.returncode == 1
    assert again.stderr.startswith("stord import: line 2: namespace 'first' of the target holds data already")
    assert "nothing was imported" in again.stderr
    # A namespace first seen in the middle of a batch: its own first line.
    assert stord("import", *database, "--replace", "-i", str(export)).returncode == 0
    second_only = stord("import", "--data-dir", str(tmp_path / "data2"), "-i", str(tmp_path / "other.jsonl"))
    assert second_only.returncode == 0
    mixed = stord("import", "--data-dir", str(tmp_path / "data2"), "-i", str(export))
    assert mixed.returncode == 1
    assert mixed.stderr.startswith(f"stord import: line {1500 + 2}: namespace 'second'")

"""Tenant isolation with API keys: what tenant A writes, tenant B can neither see, list, count nor delete.

Every service is covered, on SQLite and PostgreSQL. Tenant B uses the same ids and names as tenant A, so a
leak through a shared key space would show up as a hit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from stord.client import Client, NotFound, PermissionDenied, make_event
from stord.server.config import Settings
from stord.server.rpc.auth import Role
from stord.v1 import events_pb2, manifests_pb2
from tests.conftest import make_backend_url
from tests.harness.auth import Tenant, write_keys
from tests.harness.daemon import DaemonThread

QUEUE = "emails"
COLLECTION = "orders"
SESSION = "s1"
AGENT = "a1"
AGENT_URI = "agent://tenant/bot"
HANDLER = "user.create"


@dataclass
class Tenants:
    a: Client
    b: Client
    job_id: str
    event_id: str
    target: str
    b_secret: str


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def tenants(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    """A daemon requiring keys, tenant A's data written through every service, and a client for each."""
    directory = tmp_path_factory.mktemp(f"isolation-{request.param}")
    first = Tenant("a", "tenant-a", "alice", Role.READ_WRITE)
    second = Tenant("b", "tenant-b", "bob", Role.READ_WRITE)
    url = make_backend_url(request, request.param, directory)
    settings = Settings(
        listen="127.0.0.1:0",
        database=url,
        cache=url,
        api_keys_file=write_keys(directory / "keys.yaml", [first, second]),
        log_level="warning",
    )
    thread = DaemonThread(settings).start()
    with Client(thread.target, api_key=first.secret) as a, Client(thread.target, api_key=second.secret) as b:
        job_id, event_id = _write_tenant_data(a)
        yield Tenants(a, b, job_id, event_id, thread.target, second.secret)
    thread.stop()


def _write_tenant_data(client: Client) -> tuple[str, str]:
    client.cache.set("k", b"cached")
    client.db.set("k", b"stored")
    client.db.append("list", b"item")
    client.documents.create(COLLECTION, {"total": 10}, id="d1")
    job_id = client.jobs.enqueue(QUEUE, {"to": "a@example.com"})
    event = make_event(SESSION, AGENT, "custom", event_id="e1")
    client.events.insert([event])
    client.events.upsert_session(SESSION, agent_id=AGENT)
    client.events.upsert_agent(AGENT, name="Agent A")
    client.events.create_alert_rule(
        events_pb2.AlertRule(
            id="r1",
            name="errors",
            enabled=True,
            condition=events_pb2.ALERT_CONDITION_ERROR_RATE_EXCEEDS,
            threshold=0.1,
            window_minutes=15,
        )
    )
    client.agents.set(AGENT_URI, name="bot")
    client.manifests.store_manifest(manifests_pb2.HandlerManifest(handler_id=HANDLER, version="1"))
    return job_id, "e1"


def test_b_cannot_reach_a_namespace_by_metadata(tenants: Tenants) -> None:
    with Client(tenants.target, namespace="tenant-a", api_key=tenants.b_secret) as b_as_a:
        with pytest.raises(PermissionDenied):
            b_as_a.db.get("k")
        with pytest.raises(PermissionDenied):
            b_as_a.documents.count(COLLECTION)


def test_key_values_and_cache_are_isolated(tenants: Tenants) -> None:
    b = tenants.b
    for store in (b.cache, b.db):
        assert store.get("k") is None
        assert store.get_many(["k"]) == [None]
        assert not store.exists("k")
        assert list(store.keys()) == []
        assert not store.delete("k")
        store.clear()
    assert b.db.length("list") == 0
    assert b.db.get_range("list") == []


def test_documents_are_isolated(tenants: Tenants) -> None:
    b = tenants.b
    assert b.documents.get(COLLECTION, "d1") is None
    assert b.documents.find(COLLECTION) == []
    assert b.documents.count(COLLECTION) == 0
    with pytest.raises(NotFound):
        b.documents.delete(COLLECTION, "d1")
    with pytest.raises(NotFound):
        b.documents.update(COLLECTION, "d1", {"total": 0})


def test_jobs_are_isolated(tenants: Tenants) -> None:
    b = tenants.b
    assert b.jobs.get(tenants.job_id) is None
    assert list(b.jobs.find(QUEUE)) == []
    stats = b.jobs.stats(QUEUE)
    assert (stats.pending, stats.running, stats.completed) == (0, 0, 0)
    assert b.jobs.dequeue(QUEUE) == []


def test_events_sessions_agents_and_stats_are_isolated(tenants: Tenants) -> None:
    b = tenants.b
    with pytest.raises(NotFound):
        b.events.get(tenants.event_id)
    assert b.events.count() == 0
    assert list(b.events.query().events) == []
    assert list(b.events.timeline(SESSION)) == []
    with pytest.raises(NotFound):
        b.events.get_session(SESSION)
    assert list(b.events.query_sessions().sessions) == []
    with pytest.raises(NotFound):
        b.events.get_agent(AGENT)
    assert list(b.events.agents()) == []
    with pytest.raises(NotFound):
        b.events.get_alert_rule("r1")
    with pytest.raises(NotFound):
        b.events.delete_alert_rule("r1")
    assert list(b.events.alert_rules()) == []
    stats = b.events.stats()
    assert (stats.total_events, stats.total_sessions, stats.total_agents) == (0, 0, 0)


def test_agent_registry_is_isolated(tenants: Tenants) -> None:
    b = tenants.b
    assert b.agents.get(AGENT_URI) is None
    assert list(b.agents.search()) == []
    assert not b.agents.delete(AGENT_URI)


def test_manifests_are_isolated(tenants: Tenants) -> None:
    b = tenants.b
    assert b.manifests.get_manifest(HANDLER) is None
    assert list(b.manifests.list_manifest_versions(HANDLER)) == []
    assert b.manifests.get_stats().manifest_count == 0
    b.manifests.clear()


def test_a_keeps_everything_b_tried_to_reach(tenants: Tenants) -> None:
    a = tenants.a
    assert a.cache.get("k") == b"cached"
    assert a.db.get("k") == b"stored"
    assert a.db.length("list") == 1
    document = a.documents.get(COLLECTION, "d1")
    assert document is not None
    assert document.data == {"total": 10}
    assert a.jobs.get(tenants.job_id) is not None
    assert a.events.count() == 1
    assert a.events.get_session(SESSION).id == SESSION
    assert a.events.get_alert_rule("r1").name == "errors"
    stored = a.agents.get(AGENT_URI)
    assert stored is not None
    assert stored.owner == "alice"
    assert a.manifests.get_stats().manifest_count == 1

"""Several `stord serve` processes on one database give the answers of one (issue 7, item 4).

Three daemons on one PostgreSQL and one Redis, started at the same moment on a fresh database, driven
together: jobs, one session's events through two of them, revisions, read-through caches, tails. Then two
daemons on one SQLite file, and a tail that a SIGTERM ends.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from stord.client import (
    Client,
    Conflict,
    EnqueueJob,
    EventIngestor,
    Job,
    Unavailable,
    Worker,
    make_event,
)
from stord.server.schema import load_migrations
from stord.v1 import manifests_pb2
from tests.harness.postgres import PostgresServer
from tests.harness.redis import RedisServer
from tests.harness.served import Served
from tests.harness.tails import assert_chains_in_order, receive

pytestmark = pytest.mark.process

JOBS = 20_000
ENQUEUE_BATCH = 1000
WORKERS_PER_DAEMON = 2
EVENTS_PER_INGESTOR = 2000
SESSIONS = 2
ROUNDS = 50


class Cluster:
    """Three daemons on one PostgreSQL database and one Redis."""

    def __init__(self, daemons: list[Served], database: str) -> None:
        self.daemons = daemons
        self.database = database

    @property
    def addresses(self) -> list[str]:
        return [daemon.address for daemon in self.daemons]

    def clients(self, namespace: str) -> list[Client]:
        return [Client(address, namespace=namespace, timeout=30) for address in self.addresses]


def start_together(count: int, directory: Path, *extra: str) -> list[Served]:
    """Start `count` daemons at the same moment (one thread each, released together); return them healthy."""
    ready = threading.Barrier(count)
    started: list[Served | BaseException | None] = [None] * count

    def start(index: int) -> None:
        home = directory / f"daemon-{index}"
        home.mkdir()
        ready.wait()
        try:
            started[index] = Served(home / "data", *extra)
        except BaseException as error:
            started[index] = error

    threads = [threading.Thread(target=start, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    daemons = [each for each in started if isinstance(each, Served)]
    failures = [each for each in started if not isinstance(each, Served)]
    if failures:
        for daemon in daemons:
            daemon.stop(signal.SIGKILL)
        raise AssertionError(f"daemons failed to start: {failures}")
    return daemons


@pytest.fixture(scope="module")
def cluster(
    postgres_server: PostgresServer, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    database = postgres_server.create_database(f"scale_out_{os.getpid()}_{uuid.uuid4().hex[:8]}")
    directory = tmp_path_factory.mktemp("scale-out")
    daemons = start_together(3, directory, "--database", database, "--cache", redis_server.url)
    try:
        yield Cluster(daemons, database)
    finally:
        for daemon in daemons:
            daemon.stop(signal.SIGKILL)


def test_daemons_started_together_migrate_the_fresh_database_once(cluster: Cluster) -> None:
    applied = [
        int(str(event["version"]))
        for daemon in cluster.daemons
        for event in daemon.events()
        if event["event"] == "postgres_migration_applied"
    ]
    versions = [migration.version for migration in load_migrations("postgres")]
    assert sorted(applied) == versions  # each by one daemon only, the others found nothing left to do
    with psycopg.connect(cluster.database) as connection:
        recorded = [row[0] for row in connection.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert recorded == versions


def test_jobs_spread_over_the_daemons_are_each_completed_exactly_once(cluster: Cluster) -> None:
    namespace = f"jobs-{uuid.uuid4().hex[:8]}"
    clients = cluster.clients(namespace)
    handled: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    all_handled = threading.Event()
    stop = threading.Event()

    def handle(job: Job) -> None:
        with lock:
            handled[job.id] += 1
            if sum(handled.values()) >= JOBS:
                all_handled.set()

    workers = [
        threading.Thread(
            target=Worker(client.jobs, "work", handle, batch_size=250, lease=120, wait=0.5).run, args=(stop,)
        )
        for client in clients
        for _ in range(WORKERS_PER_DAEMON)
    ]
    enqueued: list[str] = []

    def enqueue(client: Client, batches: range) -> None:
        for batch in batches:
            jobs = [
                EnqueueJob("work", {"n": batch * ENQUEUE_BATCH + index}) for index in range(ENQUEUE_BATCH)
            ]
            ids = [job.job_id for job in client.jobs.enqueue_many(jobs)]
            with lock:
                enqueued.extend(ids)

    batches = JOBS // ENQUEUE_BATCH
    producers = [
        threading.Thread(target=enqueue, args=(client, range(index, batches, len(clients))))
        for index, client in enumerate(clients)
    ]
    try:
        for thread in [*workers, *producers]:
            thread.start()
        for thread in producers:
            thread.join()
        assert all_handled.wait(120), f"{sum(handled.values())} of {JOBS} jobs handled"
    finally:
        stop.set()
        for thread in [*producers, *workers]:
            thread.join()
    assert len(enqueued) == len(set(enqueued)) == JOBS
    assert set(handled) == set(enqueued)
    assert set(handled.values()) == {1}
    for client in clients:
        stats = client.jobs.stats("work")
        assert (stats.completed, stats.pending, stats.running, stats.retrying, stats.failed) == (
            JOBS,
            0,
            0,
            0,
            0,
        )
        client.close()


def test_one_session_ingested_through_two_daemons_keeps_one_chain_and_every_daemon_tails_it(
    cluster: Cluster,
) -> None:
    namespace = f"events-{uuid.uuid4().hex[:8]}"
    first, second, third = cluster.clients(namespace)
    sessions = [f"session-{index}" for index in range(SESSIONS)]
    added: list[str] = []
    lock = threading.Lock()

    def ingest(address: str, writer: int) -> None:
        with EventIngestor(address, namespace=namespace, batch_size=100, max_in_flight=4) as ingestor:
            for index in range(EVENTS_PER_INGESTOR):
                event = make_event(sessions[index % SESSIONS], "agent", "tool_call", payload={"n": index})
                event_id = ingestor.add(event)
                with lock:
                    added.append(event_id)
            ingestor.flush()

    total = 2 * EVENTS_PER_INGESTOR
    with first.events.tail() as tail_here, third.events.tail() as tail_elsewhere:
        ingestors = [
            threading.Thread(target=ingest, args=(address, writer))
            for writer, address in enumerate(cluster.addresses[:2])
        ]
        for thread in ingestors:
            thread.start()
        for thread in ingestors:
            thread.join()
        for tail in (tail_here, tail_elsewhere):
            delivered = receive(tail, total)
            assert sorted(event.id for event in delivered) == sorted(added)
            assert_chains_in_order(delivered)
    for reader in (first, second, third):
        assert reader.events.count() == total
    for session in sessions:
        verified = third.events.verify_chain(session)
        assert (verified.valid, verified.checked_events) == (True, total // SESSIONS), verified.reason
        timeline = list(second.events.timeline(session))
        assert len(timeline) == total // SESSIONS
        times = [(event.timestamp.ToNanoseconds(), event.id) for event in timeline]
        assert times == sorted(times)
    for client in (first, second, third):
        client.close()


def test_an_expected_revision_is_decided_in_the_database(cluster: Cluster) -> None:
    first, second, third = cluster.clients(f"docs-{uuid.uuid4().hex[:8]}")
    document = first.documents.create("plans", {"status": "draft"})
    updated = second.documents.update("plans", document.id, {"status": "ready"}, expected_revision=1)
    assert updated.revision == 2
    with pytest.raises(Conflict):
        third.documents.update("plans", document.id, {"status": "stale"}, expected_revision=1)
    with pytest.raises(Conflict):
        first.documents.delete("plans", document.id, expected_revision=1)
    # Writers with the same revision on different daemons at once: exactly one wins each round.
    for round_ in range(20):
        current = first.documents.get("plans", document.id)
        assert current is not None
        outcomes: list[str] = []

        def write(
            client: Client,
            revision: int = current.revision,
            round_: int = round_,
            outcomes: list[str] = outcomes,
        ) -> None:
            try:
                client.documents.update("plans", document.id, {"round": round_}, expected_revision=revision)
            except Conflict:
                outcomes.append("conflict")
            else:
                outcomes.append("ok")

        writers = [threading.Thread(target=write, args=(client,)) for client in (first, second, third)]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
        assert sorted(outcomes) == ["conflict", "conflict", "ok"]
    final = third.documents.get("plans", document.id)
    assert final is not None
    assert final.revision == 2 + 20
    for client in (first, second, third):
        client.close()


def test_a_write_on_one_daemon_is_never_followed_by_a_stale_read_on_another(cluster: Cluster) -> None:
    writer, *readers = cluster.clients(f"cache-{uuid.uuid4().hex[:8]}")
    for index in range(ROUNDS):
        for reader in readers:  # fill the shared cache entries with what is about to be replaced
            reader.agents.get("agent")
            reader.manifests.get_manifest("handler")
        writer.agents.set("agent", name=f"v{index}", configuration={"round": index})
        version = f"{index:04d}"
        writer.manifests.store_manifest(manifests_pb2.HandlerManifest(handler_id="handler", version=version))
        writer.db.set("key", b"%d" % index)
        writer.cache.set("key", b"%d" % index)
        for reader in readers:
            agent = reader.agents.get("agent")
            assert agent is not None
            assert (agent.name, agent.configuration["round"]) == (f"v{index}", index)
            latest = reader.manifests.get_manifest("handler")
            assert latest is not None
            assert latest.version == version
            assert reader.db.get("key") == b"%d" % index
            assert reader.cache.get("key") == b"%d" % index
    writer.agents.delete("agent")
    for reader in readers:
        assert reader.agents.get("agent") is None
    for client in (writer, *readers):
        client.close()


# Two daemons on one SQLite file -----------------------------------------------------------------------------


def test_a_tail_sees_what_another_process_on_the_same_sqlite_file_stores(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    daemons = start_together(2, tmp_path, "--database", database)
    try:
        with (
            Client(daemons[0].address) as reader,
            Client(daemons[1].address) as writer,
            reader.events.tail() as tail,
        ):
            stored: list[str] = []
            for batch in range(20):
                events = [make_event(f"s{index % 3}", "agent", "custom") for index in range(50)]
                stored += [event.id for event in writer.events.insert(events).events]
                if batch % 5 == 0:  # and some through the reader's daemon too
                    stored += [event.id for event in reader.events.insert(events[:1]).events]
            delivered = receive(tail, len(stored))
            assert sorted(event.id for event in delivered) == sorted(stored)
            assert_chains_in_order(delivered)
    finally:
        for daemon in daemons:
            daemon.stop()


def test_sigterm_ends_open_tails_at_once_with_unavailable(tmp_path: Path) -> None:
    config = tmp_path / "stord.yaml"
    config.write_text("grace_period: 120\n")  # a tail left open would hold the exit for two minutes
    daemon = Served(tmp_path / "data", "--config", str(config))
    try:
        with Client(daemon.address) as client, client.events.tail() as tail:
            client.events.insert([make_event("s", "agent", "custom", event_id="before")])
            assert [event.id for event in receive(tail, 1)] == ["before"]
            daemon.process.send_signal(signal.SIGTERM)
            with pytest.raises(Unavailable, match="shutting down"):
                receive(tail, 1, timeout=30)
        assert daemon.stop(timeout=30) == 0
    finally:
        daemon.stop(signal.SIGKILL)

"""TailEvents across daemons sharing one database: every committed batch, once, in commit order.

Two daemons in this process on one SQLite file or one PostgreSQL database, concurrent writers through both,
and a tail on each; on PostgreSQL also a listener that loses its connection, and a database restart.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from stord.client import Client, Unavailable, make_event
from stord.server.config import Settings
from tests.conftest import SHARED_DATABASES, make_backend_url
from tests.harness.daemon import DaemonThread
from tests.harness.postgres import PostgresServer, start_postgres
from tests.harness.tails import assert_chains_in_order, receive

WRITERS_PER_DAEMON = 2
BATCHES = 20
BATCH_SIZE = 25
SESSIONS = 4


@pytest.fixture(params=SHARED_DATABASES)
def two_daemons(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """Two daemons on one fresh database: their targets and the database URL."""
    url = make_backend_url(request, request.param, tmp_path)
    settings = Settings(listen="127.0.0.1:0", database=url, cache="memory://", log_level="warning")
    first = DaemonThread(settings).start()
    try:
        second = DaemonThread(settings).start()
        try:
            yield first.target, second.target, url
        finally:
            second.stop()
    finally:
        first.stop()


def test_a_tail_on_either_daemon_sees_every_batch_once_in_commit_order(
    two_daemons: tuple[str, str, str],
) -> None:
    first, second, _ = two_daemons
    namespace = f"t-{uuid.uuid4().hex[:12]}"
    stored: list[str] = []
    lock = threading.Lock()

    def write(target: str, writer: int) -> None:
        with Client(target, namespace=namespace) as client:
            for batch in range(BATCHES):
                events = [
                    make_event(
                        f"s{(batch + index) % SESSIONS}",
                        "agent",
                        "custom",
                        event_id=f"w{writer}-{batch}-{index}",
                    )
                    for index in range(BATCH_SIZE)
                ]
                client.events.insert(events)
                with lock:
                    stored.extend(event.id for event in events)

    targets = [first, second] * WRITERS_PER_DAEMON
    with (
        Client(first, namespace=namespace) as one,
        Client(second, namespace=namespace) as other,
        one.events.tail() as on_first,
        other.events.tail() as on_second,
    ):
        writers = [
            threading.Thread(target=write, args=(target, index)) for index, target in enumerate(targets)
        ]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
        total = len(targets) * BATCHES * BATCH_SIZE
        for tail in (on_first, on_second):
            events = receive(tail, total)
            assert sorted(event.id for event in events) == sorted(stored)
            assert_chains_in_order(events)
        for session in range(SESSIONS):
            assert one.events.verify_chain(f"s{session}").valid


def test_a_listener_that_loses_its_connection_catches_up_on_what_committed_meanwhile(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = make_backend_url(request, "postgres", tmp_path)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    database = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
    settings = Settings(listen="127.0.0.1:0", database=url, cache="memory://", log_level="warning")
    reader_daemon = DaemonThread(settings).start()
    writer_daemon = DaemonThread(settings).start()
    namespace = f"t-{uuid.uuid4().hex[:12]}"
    try:
        with (
            Client(reader_daemon.target, namespace=namespace) as reader,
            Client(writer_daemon.target, namespace=namespace) as writer,
            reader.events.tail() as tail,
            psycopg.connect(server.url("postgres"), autocommit=True) as admin,
        ):
            writer.events.insert([make_event("s", "agent", "custom", event_id="before")])
            assert [event.id for event in receive(tail, 1)] == ["before"]
            # New connections are refused (the pools keep theirs): the listeners cannot come back yet.
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(database))
            )
            try:
                assert _terminate_listeners(admin, database), "no daemon was listening"
                expected = [f"meanwhile-{batch}" for batch in range(10)]
                for event_id in expected:  # committed and notified while nobody listens
                    writer.events.insert([make_event("s", "agent", "custom", event_id=event_id)])
                assert not _listeners(admin, database)
            finally:
                admin.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(database))
                )
            assert [event.id for event in receive(tail, len(expected))] == expected
            writer.events.insert([make_event("s", "agent", "custom", event_id="after")])
            assert [event.id for event in receive(tail, 1)] == ["after"]
    finally:
        writer_daemon.stop()
        reader_daemon.stop()


def _listeners(admin: psycopg.Connection[Any], database: str) -> list[int]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'stord-events-listen' AND datname = %s",
        (database,),
    ).fetchall()
    return [row[0] for row in rows]


def _terminate_listeners(admin: psycopg.Connection[Any], database: str) -> list[int]:
    """Terminate the feed listeners' connections to the database and wait until they are gone."""
    pids = _listeners(admin, database)
    for pid in pids:
        admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
    return pids


def test_a_tail_goes_on_across_a_database_restart(tmp_path: Path) -> None:
    postgres = start_postgres(tmp_path / "postgres")
    try:
        url = postgres.create_database("stord")
        settings = Settings(listen="127.0.0.1:0", database=url, cache="memory://", log_level="warning")
        reader_daemon = DaemonThread(settings).start()
        writer_daemon = DaemonThread(settings).start()
        try:
            with (
                Client(reader_daemon.target) as reader,
                Client(writer_daemon.target) as writer,
                reader.events.tail() as tail,
            ):
                writer.events.insert([make_event("s", "agent", "custom", event_id="before")])
                assert [event.id for event in receive(tail, 1)] == ["before"]
                postgres.stop_server("fast")  # a clean stop: nothing acknowledged is lost
                postgres.start_server()
                expected = [f"after-{index}" for index in range(5)]
                for event_id in expected:
                    _insert_until_stored(writer, event_id)
                assert [event.id for event in receive(tail, len(expected))] == expected
        finally:
            writer_daemon.stop()
            reader_daemon.stop()
    finally:
        postgres.stop()


def _insert_until_stored(client: Client, event_id: str, timeout: float = 30) -> None:
    """Insert one event, again while the daemon answers UNAVAILABLE (reconnecting); its id stores it once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.events.insert([make_event("s", "agent", "custom", event_id=event_id)])
            return
        except Unavailable:
            assert time.monotonic() < deadline, "the daemon did not serve again after the restart"
            time.sleep(0.1)

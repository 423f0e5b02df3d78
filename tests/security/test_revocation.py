"""Revocation reaches open calls: after a key reload, every stream and long poll its key no longer allows
ends within a second, with UNAUTHENTICATED for a revoked key and PERMISSION_DENIED for a narrowed role."""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from stord.server.config import Settings
from stord.server.rpc.auth import Role
from stord.v1 import events_pb2, events_pb2_grpc, jobs_pb2, jobs_pb2_grpc
from tests.harness.auth import Tenant, write_keys
from tests.harness.daemon import DaemonThread
from tests.harness.served import Served

WITHIN = 1.0
"""Seconds from the reload to the end of every call the reload took the right to."""


class Keyed:
    """A daemon on memory with a writer and a second key of the same namespace that is never revoked."""

    def __init__(self, directory: Path) -> None:
        self.writer = Tenant("writer", "shop", "svc", Role.READ_WRITE)
        self.witness = Tenant("witness", "shop", "svc", Role.READ_WRITE)
        self.keys_file = write_keys(directory / "keys.yaml", [self.writer, self.witness])
        settings = Settings(
            listen="127.0.0.1:0", database="memory://", api_keys_file=self.keys_file, log_level="warning"
        )
        self.thread = DaemonThread(settings).start()
        self.channel = grpc.insecure_channel(self.thread.target)
        self.events = events_pb2_grpc.EventStoreServiceStub(self.channel)
        self.jobs = jobs_pb2_grpc.JobQueueServiceStub(self.channel)

    def reload(self, *tenants: Tenant) -> float:
        """Write the keys file with `tenants`, reload it; return when."""
        write_keys(self.keys_file, list(tenants))
        assert self.thread.daemon.reload_keys()
        return time.monotonic()

    def close(self) -> None:
        self.channel.close()
        self.thread.stop()


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[Keyed]:
    daemon = Keyed(tmp_path)
    yield daemon
    daemon.close()


def auth(tenant: Tenant) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {tenant.secret}"),)


def event(session: str) -> events_pb2.Event:
    return events_pb2.Event(
        session_id=session,
        agent_id="a",
        event_type=events_pb2.EVENT_TYPE_CUSTOM,
        severity=events_pb2.SEVERITY_INFO,
    )


class Ended:
    """Consume a call on a thread; record when and how it ended."""

    def __init__(self, responses: Any) -> None:
        self.received: queue.Queue[Any] = queue.Queue()
        self.code: grpc.StatusCode | None = None
        self.at = 0.0
        self._responses = responses
        self._thread = threading.Thread(target=self._consume, daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        try:
            for response in self._responses:
                self.received.put(response)
        except grpc.RpcError as error:
            self.code = error.code()
        self.at = time.monotonic()

    def wait(self, timeout: float = 30) -> grpc.StatusCode | None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the call is still open"
        return self.code


def open_tail(keyed: Keyed, tenant: Tenant) -> Ended:
    tail = Ended(keyed.events.TailEvents(events_pb2.TailEventsRequest(), metadata=auth(tenant)))
    # The tail is open once it delivers an event stored after it started.
    deadline = time.monotonic() + 30
    while tail.received.empty():
        keyed.events.InsertEvents(
            events_pb2.InsertEventsRequest(events=[event("probe")]), metadata=auth(keyed.witness)
        )
        time.sleep(0.05)
        assert time.monotonic() < deadline
    return tail


def open_ingest(keyed: Keyed, tenant: Tenant) -> tuple[Ended, queue.Queue[Any]]:
    requests: queue.Queue[Any] = queue.Queue()

    def send() -> Iterator[events_pb2.IngestEventsRequest]:
        while (request := requests.get()) is not None:
            yield request

    ingest = Ended(keyed.events.IngestEvents(send(), metadata=auth(tenant)))
    requests.put(events_pb2.IngestEventsRequest(sequence=1, events=[event("ingest")]))
    assert ingest.received.get(timeout=30).accepted == 1
    return ingest, requests


def test_a_revoked_keys_open_tail_and_ingest_streams_end_within_a_second(keyed: Keyed) -> None:
    tail = open_tail(keyed, keyed.writer)
    ingest, requests = open_ingest(keyed, keyed.writer)
    witness_tail = open_tail(keyed, keyed.witness)
    revoked_at = keyed.reload(keyed.witness)
    try:
        assert tail.wait() is grpc.StatusCode.UNAUTHENTICATED
        assert ingest.wait() is grpc.StatusCode.UNAUTHENTICATED
        assert tail.at - revoked_at < WITHIN, f"the tail ended {tail.at - revoked_at:.3f} s after the reload"
        assert ingest.at - revoked_at < WITHIN, f"the ingest ended {ingest.at - revoked_at:.3f} s after it"
        assert witness_tail.code is None  # a key still in force keeps its stream
    finally:
        requests.put(None)


def test_a_narrowed_role_ends_the_streams_it_no_longer_allows(keyed: Keyed) -> None:
    tail = open_tail(keyed, keyed.writer)
    ingest, requests = open_ingest(keyed, keyed.writer)
    reader = Tenant("writer", "shop", "svc", Role.READ_ONLY)
    reader.secret, reader.entry = (
        keyed.writer.secret,
        keyed.writer.entry.__class__("writer", keyed.writer.entry.sha256, "shop", "svc", Role.READ_ONLY),
    )
    narrowed_at = keyed.reload(reader, keyed.witness)
    try:
        assert ingest.wait() is grpc.StatusCode.PERMISSION_DENIED
        assert ingest.at - narrowed_at < WITHIN
        while not tail.received.empty():
            tail.received.get()
        keyed.events.InsertEvents(
            events_pb2.InsertEventsRequest(events=[event("later")]), metadata=auth(keyed.witness)
        )
        assert tail.received.get(timeout=30).events  # reading is still allowed: the tail stays open
        assert tail.code is None
    finally:
        requests.put(None)


def test_a_revoked_keys_long_poll_ends_within_a_second(keyed: Keyed) -> None:
    dequeue = keyed.jobs.Dequeue.future(
        jobs_pb2.DequeueRequest(queue="empty", wait=Duration(seconds=60)), metadata=auth(keyed.writer)
    )
    time.sleep(0.3)  # the poll is waiting (it would return after 60 s)
    revoked_at = keyed.reload(keyed.witness)
    with pytest.raises(grpc.RpcError) as ended:
        dequeue.result(timeout=30)
    assert ended.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert time.monotonic() - revoked_at < WITHIN


@pytest.mark.process
def test_sighup_ends_a_revoked_keys_tail_in_a_served_daemon(tmp_path: Path) -> None:
    writer = Tenant("writer", "shop", "svc", Role.READ_WRITE)
    witness = Tenant("witness", "shop", "svc", Role.READ_WRITE)
    keys_file = write_keys(tmp_path / "keys.yaml", [writer, witness])
    served = Served(tmp_path / "data", "--database", "memory://", "--api-keys-file", str(keys_file))
    try:
        with grpc.insecure_channel(served.address) as channel:
            stub = events_pb2_grpc.EventStoreServiceStub(channel)
            tail = Ended(stub.TailEvents(events_pb2.TailEventsRequest(), metadata=auth(writer)))
            deadline = time.monotonic() + 30
            while tail.received.empty():
                stub.InsertEvents(
                    events_pb2.InsertEventsRequest(events=[event("probe")]), metadata=auth(witness)
                )
                time.sleep(0.05)
                assert time.monotonic() < deadline
            write_keys(keys_file, [witness])
            served.process.send_signal(signal.SIGHUP)
            assert tail.wait() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        served.stop()

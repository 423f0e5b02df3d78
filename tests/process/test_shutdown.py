"""`stord serve` stopping: long polls answered at once, a second signal cutting the drain short, late ones."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from stord.client import Client, make_event
from stord.v1 import events_pb2, events_pb2_grpc
from tests.harness._system import free_port
from tests.harness.served import Served

pytestmark = pytest.mark.process

LONG_GRACE = "grace_period: 120\n"
"""A call left in flight would hold the exit for two minutes: far past every deadline below."""


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def _served_with_long_grace(tmp_path: Path, *extra: str) -> Served:
    config = tmp_path / "stord.yaml"
    config.write_text(LONG_GRACE)
    return Served(tmp_path / "data", "--config", str(config), *extra)


def test_sigterm_answers_a_waiting_dequeue_at_once_with_no_jobs(tmp_path: Path) -> None:
    metrics = free_port()
    daemon = _served_with_long_grace(tmp_path, "--metrics-listen", f"127.0.0.1:{metrics}")

    def seen_by_the_daemon() -> bool:
        # Dequeue notes its queue for the depth metric once it has validated the call, before it waits.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
            return 'stord_job_queue_depth{queue="idle"' in response.read().decode()

    try:
        with ThreadPoolExecutor(1) as pool, Client(daemon.address) as client:  # closed first: ends the call
            answer = pool.submit(client.jobs.dequeue, "idle", wait=60)
            _wait_until(seen_by_the_daemon, "the dequeue reached the daemon")
            daemon.process.send_signal(signal.SIGTERM)
            assert answer.result(timeout=20) == []  # not the 60 s wait, nor CANCELLED at the grace's end
        assert daemon.stop(timeout=20) == 0
        dequeues = [event for event in daemon.events() if str(event.get("method")).endswith("/Dequeue")]
        assert [event["status"] for event in dequeues] == ["OK"]
    finally:
        daemon.stop(signal.SIGKILL)


@pytest.fixture
def open_ingest(tmp_path: Path) -> Iterator[tuple[Served, Iterator[events_pb2.IngestEventsResponse]]]:
    """A daemon with a long grace period, and an IngestEvents stream into it that the client keeps open."""
    daemon = _served_with_long_grace(tmp_path)
    release = threading.Event()

    def batches() -> Iterator[events_pb2.IngestEventsRequest]:
        yield events_pb2.IngestEventsRequest(sequence=1, events=[make_event("s", "agent", "custom")])
        release.wait(60)  # the stream stays open: the call is in flight until the daemon ends it

    try:
        with grpc.insecure_channel(daemon.address) as channel:
            try:
                answers = events_pb2_grpc.EventStoreServiceStub(channel).IngestEvents(batches(), timeout=60)
                assert next(answers).sequence == 1  # the call is in the daemon's hands
                yield daemon, answers
            finally:
                release.set()
    finally:
        daemon.stop(signal.SIGKILL)


def test_a_second_signal_ends_the_drain_at_once_and_late_ones_do_not_kill(
    open_ingest: tuple[Served, Iterator[events_pb2.IngestEventsResponse]],
) -> None:
    daemon, answers = open_ingest
    daemon.process.send_signal(signal.SIGTERM)
    _wait_until(lambda: "draining" in [event["event"] for event in daemon.events()], "the drain began")
    # Signals keep coming, alternating, until the process is gone: the second ends the drain, and none of
    # the later ones, some arriving as the process winds down after `stopped`, may kill it.
    deadline = time.monotonic() + 20
    for signum in itertools.cycle((signal.SIGTERM, signal.SIGINT)):
        if daemon.process.poll() is not None:
            break
        assert time.monotonic() < deadline, "the daemon kept draining after a second signal"
        os.kill(daemon.process.pid, signum)  # an exited child stays a zombie until polled: never a stranger
        time.sleep(0.001)
    assert daemon.process.returncode == 0
    with pytest.raises(grpc.RpcError):
        next(answers)
    events = [event["event"] for event in daemon.events() if event["event"] != "rpc"]
    assert events[events.index("stop_requested") :] == ["stop_requested", "draining", "stop_now", "stopped"]

"""The client across daemon restarts: idempotent calls are retried, others are not, deadlines always hold."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from google.protobuf import descriptor_pool

from stord.client import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    EventIngestor,
    IngestProgress,
    RetryPolicy,
    StordError,
    Unavailable,
    make_event,
)
from stord.client._retry import RETRIED_BY_METHOD, service_config
from stord.server.app import ADMIN_SERVICE
from stord.server.rpc.registry import CONTRACTS
from tests.harness._system import free_port
from tests.harness.served import Served

_T = TypeVar("_T")

SLACK = 3.0
"""Seconds a failing call may take beyond its deadline on a loaded machine, and still count as on time."""


def _within(seconds: float, call: Callable[[], _T]) -> tuple[_T | BaseException, float]:
    """Run `call` in a thread; return its result or exception and how long it took; fail if it hangs."""
    outcome: list[_T | BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            outcome.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"the call did not return within {seconds} s"
    return outcome[0], time.monotonic() - started


def _eventually(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def _unread_bytes(port: int) -> list[int]:
    """Bytes received but not read yet on each established TCP connection to local `port`.

    gRPC serves 127.0.0.1 on an IPv6 socket (as ::ffff:127.0.0.1), so both tables are read.
    """
    unread = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state == "01" and int(local.rpartition(":")[2], 16) == port:
                unread.append(int(queues.partition(":")[2], 16))
    return unread


def _stopped(pid: int) -> bool:
    """Whether every thread of `pid` has stopped: SIGSTOP takes effect a moment after the kill."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            states.append((task / "stat").read_text().rpartition(")")[2].split()[0])
    return bool(states) and all(state in "Tt" for state in states)


def _stop(daemon: Served) -> None:
    """SIGSTOP the daemon and wait until no thread of it can still read a request."""
    daemon.process.send_signal(signal.SIGSTOP)
    _eventually(lambda: _stopped(daemon.process.pid), "the daemon has stopped")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def served(data_dir: Path) -> Iterator[list[Served]]:
    """A daemon, and the daemons restarted after it on its port (the last one is current)."""
    daemons = [Served(data_dir)]
    yield daemons
    for daemon in daemons:
        if daemon.process.poll() is None:
            daemon.stop(signal.SIGKILL)


def _restart(daemons: list[Served], data_dir: Path) -> None:
    """SIGKILL the current daemon and start another on the same data dir and port."""
    daemons[-1].stop(signal.SIGKILL)
    daemons.append(Served(data_dir, port=daemons[-1].port))


# The table --------------------------------------------------------------------------------------------------


def test_every_rpc_is_classified_as_retried_or_not() -> None:
    pool = descriptor_pool.Default()
    # The client calls stord's services; OTLP ingest is called by OpenTelemetry exporters, which retry on
    # their own.
    services = [contract.service for contract in CONTRACTS if contract.service.startswith("stord.")]
    methods = {
        f"/{service}/{method.name}"
        for service in [*services, ADMIN_SERVICE]
        for method in pool.FindServiceByName(service).methods
    }
    assert set(RETRIED_BY_METHOD) == methods


def test_the_service_config_names_exactly_the_retried_methods() -> None:
    (method_config,) = service_config(RetryPolicy())["methodConfig"]
    named = {f"/{name['service']}/{name['method']}" for name in method_config["name"]}
    assert named == {method for method, retried in RETRIED_BY_METHOD.items() if retried}
    assert "/stord.v1.DatabaseService/Append" not in named
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert service_config(RetryPolicy(max_attempts=1)) == {}  # gRPC refuses a policy of one attempt
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=6)


# Deadlines --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("retry", [RetryPolicy(), None], ids=["retrying", "not-retrying"])
def test_a_call_to_a_dead_daemon_fails_by_its_deadline(retry: RetryPolicy | None) -> None:
    timeout = 1.0
    with Client(f"127.0.0.1:{free_port()}", timeout=timeout, retry=retry) as client:
        for call in (lambda: client.db.get("k"), lambda: client.db.append("k", b"v")):
            error, took = _within(timeout + SLACK + 10, call)
            assert isinstance(error, Unavailable), error
            assert took <= timeout + SLACK
            if retry is not None:  # it waited for a daemon that might have come back, and says so
                assert took >= timeout * 0.9
                assert "no connection to the daemon within the deadline (1 s)" in error.message


def test_an_async_call_to_a_dead_daemon_fails_by_its_deadline() -> None:
    timeout = 1.0

    async def call() -> float:
        async with AsyncClient(f"127.0.0.1:{free_port()}", timeout=timeout) as client:
            started = time.monotonic()
            with pytest.raises(Unavailable, match="no connection to the daemon within the deadline"):
                await asyncio.wait_for(client.db.get("k"), timeout + SLACK + 10)
            return time.monotonic() - started

    assert asyncio.run(call()) <= timeout + SLACK


@pytest.mark.process
def test_a_call_to_a_stopped_daemon_exceeds_its_deadline(served: list[Served]) -> None:
    # Connected, but nobody answers: the call may have reached the daemon, so this is no Unavailable.
    timeout = 1.0
    with Client(served[-1].address, timeout=timeout) as client:
        client.db.set("k", b"v")
        _stop(served[-1])
        try:
            error, took = _within(timeout + SLACK + 10, lambda: client.db.get("k"))
        finally:
            served[-1].process.send_signal(signal.SIGCONT)
    assert isinstance(error, DeadlineExceeded), error
    assert took <= timeout + SLACK


def test_a_call_without_deadline_to_a_dead_daemon_fails_instead_of_waiting_forever() -> None:
    with Client(f"127.0.0.1:{free_port()}", timeout=None) as client:
        error, _ = _within(30, lambda: client.db.get("k"))
    assert isinstance(error, Unavailable), error


# Restarts ---------------------------------------------------------------------------------------------------


@pytest.mark.process
def test_calls_in_flight_when_the_daemon_dies_are_retried_only_when_idempotent(
    served: list[Served], data_dir: Path
) -> None:
    port, key = served[-1].port, "k" * 1000  # every request is far larger than any HTTP/2 housekeeping frame
    # A connection of its own per client (gRPC would share one between like channels), so that each request
    # can be seen waiting, unread, in the daemon's socket.
    clients = {
        "idempotent get": Client(served[-1].address, timeout=30, options=[_OWN_CONNECTION]),
        "non-idempotent append": Client(served[-1].address, timeout=30, options=[_OWN_CONNECTION]),
        "get without retries": Client(served[-1].address, timeout=30, retry=None, options=[_OWN_CONNECTION]),
    }
    get, append, bare = clients.values()
    calls: dict[str, Callable[[], object]] = {
        "idempotent get": lambda: get.db.get(key),
        "non-idempotent append": lambda: append.db.append("log", b"x" * 1000),
        "get without retries": lambda: bare.db.get(key),
    }
    outcomes: dict[str, object] = {}

    def run(name: str) -> None:
        try:
            outcomes[name] = calls[name]()
        except StordError as error:
            outcomes[name] = error

    try:
        for client in clients.values():
            client.db.set(key, b"v")  # connected
        _stop(served[-1])
        threads = [threading.Thread(target=run, args=(name,)) for name in calls]
        for thread in threads:
            thread.start()
        _eventually(lambda: sum(unread >= 1000 for unread in _unread_bytes(port)) == 3, "every call is sent")
        _restart(served, data_dir)
        for thread in threads:
            thread.join(60)
        assert outcomes["idempotent get"] == b"v"
        assert isinstance(outcomes["non-idempotent append"], Unavailable)
        assert isinstance(outcomes["get without retries"], Unavailable)
        assert get.db.length("log") == 0  # the append never ran: the daemon died before reading it
    finally:
        for client in clients.values():
            client.close()


_OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)


@pytest.mark.process
def test_idempotent_calls_go_on_across_restarts_without_an_error(
    served: list[Served], data_dir: Path
) -> None:
    written: list[str] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def loop(worker: int) -> None:
        with Client(served[0].address, timeout=30) as client:
            for index in itertools.count():
                if stop.is_set():
                    return
                key = f"w{worker}-{index}"
                try:
                    client.db.set(key, b"%d" % index)
                    written.append(key)
                    if client.db.get(key) != b"%d" % index:
                        raise AssertionError(f"{key} does not read back")
                    client.cache.set(key, b"x", ttl=60)
                    client.db.get_many(written[-10:])
                except Exception as error:
                    errors.append(error)
                    return

    workers = [threading.Thread(target=loop, args=(worker,)) for worker in range(3)]
    for worker in workers:
        worker.start()

    def more_written(count: int) -> Callable[[], bool]:
        target = len(written) + count
        return lambda: len(written) >= target or bool(errors)

    try:
        for _ in range(2):
            _eventually(more_written(50), "writes go through")
            _restart(served, data_dir)
        _eventually(more_written(50), "writes go on after the restarts")
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
    assert errors == []
    with Client(served[-1].address, timeout=30) as client:
        for start in range(0, len(written), 1000):
            assert None not in client.db.get_many(written[start : start + 1000])


# EventIngestor ----------------------------------------------------------------------------------------------

EVENTS = 20_000
SESSIONS = 8
RESTART_AFTER = (5_000, 12_000)
"""Acknowledged events after which the daemon is killed and restarted: twice, well apart, before the end."""


@pytest.mark.process
def test_event_ingestor_survives_restarts_without_loss_or_duplicates(
    served: list[Served], data_dir: Path
) -> None:
    reached = {threshold: threading.Event() for threshold in RESTART_AFTER}

    def watch(progress: IngestProgress) -> None:
        for threshold, event in reached.items():
            if progress.acknowledged >= threshold:
                event.set()

    def chaos() -> None:
        for event in reached.values():
            event.wait(60)
            _restart(served, data_dir)

    killer = threading.Thread(target=chaos)
    killer.start()
    ids: dict[str, list[str]] = collections.defaultdict(list)
    try:
        with EventIngestor(served[0].address, batch_size=250, max_in_flight=4, on_progress=watch) as ingestor:
            for index in range(EVENTS):
                session = f"session-{index % SESSIONS}"
                ids[session].append(
                    ingestor.add(make_event(session, "agent", "tool_call", payload={"i": index}))
                )
            ingestor.flush()
            progress = ingestor.progress()
    finally:
        killer.join(120)
    assert len(served) == 1 + len(RESTART_AFTER), "the daemon was not restarted during the ingest"
    assert progress.reconnects >= len(RESTART_AFTER)
    assert (progress.added, progress.acknowledged) == (EVENTS, EVENTS)
    assert progress.accepted + progress.duplicates == EVENTS
    with Client(served[-1].address, timeout=30) as client:
        assert client.events.count() == EVENTS
        for session, added in ids.items():
            stored = [event.id for event in client.events.timeline(session)]
            assert sorted(stored) == sorted(added), session  # each event once, none made up
            verified = client.events.verify_chain(session)
            assert (verified.valid, verified.checked_events) == (True, len(added)), verified.reason

"""`stord serve --workers N`: processes sharing a port, a database and a cache; stopping, failing as one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from stord.client import Client
from tests.conftest import SHARED_DATABASES, make_backend_url
from tests.harness._system import free_port
from tests.harness.served import STORD, Served

pytestmark = pytest.mark.process

WORKERS = 2
CONNECTIONS = 24
"""Client connections: the kernel spreads them over the workers by hash, so each worker gets some (all on one
would happen about once in 8 million runs)."""

_OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)
"""A connection per client: gRPC would otherwise share one between like channels."""


class Workers(Served):
    """A supervisor with WORKERS workers on one database URL, both roles; healthy once all of them serve."""

    def __init__(self, data_dir: Path, url: str, *extra: str, port: int | None = None) -> None:
        super().__init__(
            data_dir, "--workers", str(WORKERS), "--database", url, "--cache", url, *extra, port=port
        )

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        super().wait_healthy(timeout)
        while not self.pids():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the workers did not all start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The workers' pids, once every one of them serves."""
        started = [event for event in self.events() if event["event"] == "serving_workers"]
        return cast(list[int], started[-1]["pids"]) if started else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has exited


def _serving_pids(workers: Workers, method: str) -> set[int]:
    return {
        cast(int, event["pid"])
        for event in workers.events()
        if event["event"] == "rpc" and str(event.get("method")).endswith(method)
    }


def _started(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Iterator[Workers]:
    process = Workers(tmp_path / "data", make_backend_url(request, kind, tmp_path))
    yield process
    if process.process.poll() is None:
        process.stop(signal.SIGKILL)
    for pid in process.pids():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(params=SHARED_DATABASES)
def workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workers]:
    """Workers on each database that can be shared between processes."""
    yield from _started(request, request.param, tmp_path)


@pytest.fixture
def sqlite_workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workers]:
    """Workers on SQLite, for what the supervisor does whatever the database."""
    yield from _started(request, "sqlite", tmp_path)


def test_connections_are_served_by_every_worker_over_one_store(workers: Workers) -> None:
    assert len(workers.pids()) == WORKERS
    clients = [Client(workers.address, options=[_OWN_CONNECTION]) for _ in range(CONNECTIONS)]
    try:
        for index, client in enumerate(clients):
            client.db.set(f"key-{index}", b"%d" % index)
            client.cache.set(f"lock-{index}", b"mine", ttl=60, if_absent=True)
        job = clients[0].jobs.enqueue("mail", {"to": "ada"})
        keys = [f"key-{index}" for index in range(CONNECTIONS)]
        for client in clients:  # every key is read back through every connection, hence through every worker
            assert client.db.get_many(keys) == [b"%d" % index for index in range(CONNECTIONS)]
            assert client.cache.set("lock-0", b"theirs", if_absent=True) is False  # one cache for all
        (leased,) = clients[-1].jobs.dequeue("mail", max_jobs=5)
        assert leased.id == job
        assert {client.jobs.dequeue("mail") == [] for client in clients} == {True}
    finally:
        for client in clients:
            client.close()
    assert _serving_pids(workers, "/stord.v1.DatabaseService/MGet") == set(workers.pids())


def _free_port_pair() -> int:
    """A port free now whose successor is free too."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def test_each_worker_serves_its_metrics_and_sigterm_stops_every_worker(tmp_path: Path) -> None:
    metrics = _free_port_pair()
    url = f"sqlite:///{tmp_path / 'stord.db'}"
    workers = Workers(tmp_path / "data", url, "--metrics-listen", f"127.0.0.1:{metrics}")
    try:
        pids = workers.pids()
        clients = [Client(workers.address, options=[_OWN_CONNECTION]) for _ in range(CONNECTIONS)]
        for client in clients:
            client.db.set("k", b"v")
            client.close()
        sets = (
            'grpc_server_handled_total{grpc_code="OK",grpc_method="Set",grpc_service="stord.v1.DatabaseService",'
            'grpc_type="unary"} '
        )
        counted = [_scrape(port).partition(sets)[2].partition("\n")[0] for port in (metrics, metrics + 1)]
        assert all(counted)  # both workers served some connections, and each counts its own calls
        assert sum(float(count) for count in counted) == CONNECTIONS
        assert workers.stop(signal.SIGTERM) == 0
        assert not any(_alive(pid) for pid in pids)
        events = workers.events()
        assert sum(event["event"] == "stopped" for event in events) == WORKERS
        assert events[-1]["event"] == "stopped_workers"
    finally:
        if workers.process.poll() is None:
            workers.stop(signal.SIGKILL)


def test_a_worker_that_dies_stops_the_others_and_the_supervisor_fails(sqlite_workers: Workers) -> None:
    first, *others = sqlite_workers.pids()
    os.kill(first, signal.SIGKILL)
    assert sqlite_workers.process.wait(60) == 1
    assert not any(_alive(pid) for pid in others)
    died = [event for event in sqlite_workers.events() if event["event"] == "worker_died"]
    # `worker` is the index, as in the workers' own lines; pids() lists the workers in index order.
    assert [(event["worker"], event["pid"], event["exitcode"]) for event in died] == [
        (0, first, -signal.SIGKILL)
    ]


def test_workers_stop_when_their_supervisor_is_killed(sqlite_workers: Workers) -> None:
    pids = sqlite_workers.pids()
    sqlite_workers.stop(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        time.sleep(0.05)
    stopped = {event["pid"] for event in sqlite_workers.events() if event["event"] == "stopped"}
    assert stopped == set(pids)  # each drained and stopped, rather than being killed


def test_a_taken_port_stops_startup(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'stord.db'}"
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        address = f"127.0.0.1:{foreign.getsockname()[1]}"
        result = subprocess.run(
            [STORD, "serve", "--workers", "2", "--listen", address, "--database", url, "--cache", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on {address}" in result.stdout


def test_a_port_shared_by_other_workers_is_taken_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'stord.db'}"
    running = Workers(tmp_path / "data", url)
    try:
        # The running workers bind with SO_REUSEPORT, as a second supervisor's would: without the check the
        # two would silently split the connections between them.
        result = subprocess.run(
            [
                STORD,
                "serve",
                "--workers",
                "2",
                "--listen",
                running.address,
                "--database",
                url,
                "--cache",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert "cannot listen" in result.stdout
        assert running.process.poll() is None
    finally:
        assert running.stop() == 0


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--database", "memory://"], "workers=2 with database memory://"),
        (["--cache", "memory://"], "workers=2 needs a cache all the processes share"),
        (["--unix-socket", "/tmp/stord-workers.sock"], "workers=2 cannot share a Unix socket"),
    ],
    ids=["memory-database", "memory-cache", "unix-socket"],
)
def test_settings_that_cannot_be_shared_are_refused(extra: list[str], reason: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'stord.db'}"
    result = subprocess.run(
        [
            STORD, "serve", "--workers", "2", "--listen", f"127.0.0.1:{free_port()}",
            "--database", url, "--cache", url, *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert reason in result.stderr


def test_the_environment_sets_the_workers() -> None:
    result = subprocess.run(
        [STORD, "serve", "--listen", f"127.0.0.1:{free_port()}", "--database", "memory://"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "STORD_WORKERS": "2"},
    )
    assert result.returncode == 2
    assert "workers=2 with database memory://" in result.stderr

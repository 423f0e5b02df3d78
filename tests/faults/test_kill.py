"""SIGKILL at a random moment of mixed traffic, a restart on the same data, and nothing acknowledged lost.

Per backend, a few rounds: start `stord serve` on the data of the previous round, check everything the ledger
holds so far, run key-value writes, document transactions, event inserts and job processing from one thread
each, and kill -9 the daemon at a seeded random moment once every workload is under way. A last restart checks
the ledger once more and works the job queue dry (leases the killed daemons held run out and come back).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from stord.client import Client
from tests.conftest import SHARED_DATABASES
from tests.faults._traffic import Events, JobLedger, JobProducer, JobWorker, KeyValue, Transfers, Workload
from tests.harness.postgres import PostgresServer
from tests.harness.served import Served

pytestmark = pytest.mark.process

ROUNDS = 3
SEED = 20240607
NAMESPACE = "faults"
START_TIMEOUT = 20.0
"""Seconds for every workload to get its first call acknowledged in a round."""

AFTER_KILL = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
"""What a call in flight at the kill, or made after it, may end with (it was never answered OK)."""

_databases = itertools.count()


@pytest.fixture(params=SHARED_DATABASES)
def daemon_arguments(request: pytest.FixtureRequest) -> list[str]:
    """`stord serve` arguments for a fresh database of the parametrized backend (SQLite: the data dir's)."""
    if request.param == "sqlite":
        return []
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database(f"faults_kill_{os.getpid()}_{next(_databases)}")
    return ["--database", url]


def _kill_under_traffic(daemon: Served, workloads: list[Workload], round_: int, moment: float) -> None:
    """Run every workload against `daemon`; once each has a call acknowledged, wait `moment` s and kill -9."""
    stop = threading.Event()
    clients = [Client(daemon.address, namespace=NAMESPACE) for _ in workloads]
    threads = [
        threading.Thread(target=workload.run, args=(client, round_, stop), name=workload.name)
        for workload, client in zip(workloads, clients, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not all(workload.acknowledged for workload in workloads):
            idle = [workload.name for workload in workloads if not workload.acknowledged]
            assert time.monotonic() < deadline, f"round {round_}: nothing acknowledged for {idle}"
            time.sleep(0.01)
        time.sleep(moment)
        failed = [f"{workload.name}: {error}" for workload in workloads for error in workload.failures]
        assert not failed, f"round {round_}: calls failed before the kill: {failed}"
        daemon.stop(signal.SIGKILL)
    finally:
        stop.set()
        # A call racing the connection's close may never be answered (grpc/grpc#10418); closing the
        # channels ends it at once (CANCELLED) instead of at its deadline.
        for client in clients:
            client.close()
        for thread in threads:
            thread.join(30)
    unexpected = [
        f"{workload.name}: {error}"
        for workload in workloads
        for error in workload.failures
        if error.code not in AFTER_KILL
    ]
    assert not unexpected, f"round {round_}: {unexpected}"


def test_sigkill_during_mixed_traffic_loses_nothing_acknowledged(
    daemon_arguments: list[str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    chooser = random.Random(SEED)
    jobs = JobLedger()
    transfers = Transfers(SEED)
    workloads: list[Workload] = [KeyValue(), transfers, Events(), JobProducer(jobs), JobWorker(jobs)]
    for round_ in range(ROUNDS + 1):
        daemon = Served(data_dir, *daemon_arguments)
        try:
            with Client(daemon.address, namespace=NAMESPACE, timeout=30) as client:
                if round_ == 0:
                    transfers.open_accounts(client)
                for workload in workloads:
                    workload.verify(client)
                if round_ == ROUNDS:
                    jobs.drain(client)  # the jobs the killed daemons had leased come back and complete
                    break
            _kill_under_traffic(daemon, workloads, round_, chooser.uniform(0.05, 1.0))
        finally:
            if daemon.process.poll() is None:
                daemon.stop(signal.SIGTERM)

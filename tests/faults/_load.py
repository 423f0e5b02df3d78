"""Steady load on a daemon from a few threads, every call's outcome kept, and health as the daemon reports it.

The clients retry nothing and fail at once when the daemon cannot be reached (`retry=None`): these tests look
at what the daemon itself answers while a backend is away, not at what a retrying client makes of it.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stord.client import Client, StordError
from stord.server.rpc.registry import CONTRACTS

__all__ = [
    "DATABASE_SERVICES",
    "DEADLINE",
    "RECOVERY",
    "Load",
    "Operation",
    "Outcome",
    "database_health",
    "eventually",
    "health_status",
    "running",
]

Operation = Callable[[Client, int], object]
"""One unit of work: called with a client and a counter unique within its thread."""

DEADLINE = 3.0
"""The load's deadline: while a backend is away, every call must still be answered well within it."""

RECOVERY = 10.0
"""Seconds within which a daemon must serve again once its backend accepts connections."""

DATABASE_SERVICES = [contract.service for contract in CONTRACTS if contract.role == "database"]
"""The services that follow the database role's health (the cache service follows the cache's)."""

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one call ended: `code` is OK for a success."""

    operation: str
    started: float
    finished: float
    code: grpc.StatusCode
    message: str = ""

    @property
    def duration(self) -> float:
        return self.finished - self.started


class Load:
    """Runs each operation in a loop in a thread of its own until `stop`; keeps every call's outcome."""

    def __init__(
        self, address: str, operations: Mapping[str, Operation], *, timeout: float, namespace: str = "faults"
    ) -> None:
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self._operations = operations
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients = {
            name: Client(address, namespace=namespace, timeout=timeout, retry=None) for name in operations
        }
        self._threads = [
            threading.Thread(target=self._run, args=(name,), name=f"load-{name}", daemon=True)
            for name in operations
        ]

    def _run(self, name: str) -> None:
        operation, client = self._operations[name], self._clients[name]
        count = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                operation(client, count)
            except StordError as error:
                outcome = Outcome(name, started, time.monotonic(), error.code, error.message)
                self._stop.wait(0.02)  # a failing backend answers at once: do not spin
            else:
                outcome = Outcome(name, started, time.monotonic(), grpc.StatusCode.OK)
            with self._lock:
                self.outcomes.append(outcome)
            count += 1

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 10)
        for client in self._clients.values():
            client.close()

    def since(self, moment: float) -> list[Outcome]:
        """Return the outcomes of the calls started at or after `moment`."""
        with self._lock:
            return [outcome for outcome in self.outcomes if outcome.started >= moment]

    def wait_all(self, code: grpc.StatusCode, *, since: float, count: int = 1, timeout: float = 20) -> float:
        """Wait until every operation had `count` calls started after `since` end with `code`; return when."""

        def reached() -> bool:
            seen = self.since(since)
            return all(
                sum(1 for outcome in seen if outcome.operation == name and outcome.code == code) >= count
                for name in self._operations
            )

        try:
            eventually(reached, timeout, f"every operation {count} times {code.name}")
        except AssertionError as error:
            seen = collections.Counter(
                (outcome.operation, outcome.code.name) for outcome in self.since(since)
            )
            raise AssertionError(f"{error}; outcomes meanwhile: {dict(seen)}") from None
        return time.monotonic()


@contextmanager
def running(load: Load) -> Iterator[Load]:
    """Run `load` for the duration of the block."""
    load.start()
    try:
        yield load
    finally:
        load.stop()


def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until `condition()` holds, polling; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what}")
        time.sleep(0.05)


def health_status(address: str, service: str = "") -> int:
    """Return the daemon's grpc.health.v1 status of `service` ("" for the whole daemon)."""
    with grpc.insecure_channel(address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(response.status)


def database_health(address: str) -> set[int]:
    """Return the distinct health statuses of the whole daemon and of every database-role service."""
    return {health_status(address, service) for service in ["", *DATABASE_SERVICES]}

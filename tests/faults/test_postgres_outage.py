"""PostgreSQL stopped and started again under load: UNAVAILABLE meanwhile, served again without a restart."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest

from stord.client import Client, Unavailable, make_event
from tests.faults._load import (
    DEADLINE,
    NOT_SERVING,
    RECOVERY,
    SERVING,
    Load,
    database_health,
    eventually,
    health_status,
    running,
)
from tests.harness.postgres import start_postgres
from tests.harness.served import Served

pytestmark = pytest.mark.process


def _key_value(client: Client, count: int) -> None:
    client.db.set(f"k{count % 100}", b"%d" % count)
    client.db.get(f"k{count % 100}")


def _documents(client: Client, count: int) -> None:
    client.documents.create("notes", {"count": count})


def _jobs(client: Client, count: int) -> None:
    client.jobs.enqueue("outage", {"count": count})
    client.jobs.acknowledge(client.jobs.dequeue("outage", max_jobs=10, lease=30))


def _events(client: Client, count: int) -> None:
    client.events.insert([make_event("outage", "agent-1", "tool_call", payload={"count": count})])


OPERATIONS = {"key-value": _key_value, "documents": _documents, "jobs": _jobs, "events": _events}


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_postgres_restart_under_load(tmp_path: Path, mode: str) -> None:
    postgres = start_postgres(tmp_path / "postgres")
    daemon: Served | None = None
    try:
        config = tmp_path / "stord.yaml"
        config.write_text("health_check_interval: 0.2\n")
        url = postgres.create_database("stord")
        daemon = Served(tmp_path / "data", "--database", url, "--config", str(config))
        address = daemon.address
        with running(Load(address, OPERATIONS, timeout=DEADLINE)) as load, Client(address) as admin:
            load.wait_all(grpc.StatusCode.OK, since=time.monotonic(), count=3)

            stopped = time.monotonic()
            postgres.stop_server(mode)
            load.wait_all(grpc.StatusCode.UNAVAILABLE, since=stopped, count=5)
            eventually(lambda: database_health(address) == {NOT_SERVING}, 10, "database services NOT_SERVING")
            assert health_status(address, "stord.v1.CacheService") == SERVING  # the memory cache is fine
            database = admin.get_info().backends[0]
            assert (database.kind, database.healthy) == ("postgres", False)
            assert "PostgreSQL" in database.detail
            assert daemon.process.poll() is None

            postgres.start_server()
            started = time.monotonic()
            served_again = load.wait_all(grpc.StatusCode.OK, since=started, count=3, timeout=RECOVERY)
            eventually(lambda: database_health(address) == {SERVING}, RECOVERY, "database services SERVING")
            eventually(lambda: admin.get_info().backends[0].healthy, 10, "the database healthy in GetInfo")
            settled = time.monotonic()
            load.wait_all(grpc.StatusCode.OK, since=settled, count=5)

        during = [outcome for outcome in load.since(stopped) if outcome.started < started]
        failures = [outcome for outcome in load.since(stopped) if outcome.code is not grpc.StatusCode.OK]
        assert {outcome.code for outcome in failures} == {grpc.StatusCode.UNAVAILABLE}, failures[:5]
        assert all("PostgreSQL" in outcome.message for outcome in failures), failures[:5]
        slowest = max(outcome.duration for outcome in during)
        assert slowest < DEADLINE
        late = [outcome for outcome in load.since(settled) if outcome.code is not grpc.StatusCode.OK]
        assert not late, f"calls still failing once served again: {late[:5]}"
        print(
            f"\n{mode}: {len(during)} calls while down, slowest {slowest:.3f} s;"
            f" served again {served_again - started:.2f} s after PostgreSQL was back"
        )

        # Restarted while the daemon is idle: its pooled connections are stale; it serves again at once.
        postgres.stop_server(mode)
        postgres.start_server()
        refused: list[Unavailable] = []
        with Client(address, timeout=DEADLINE, retry=None) as client:

            def serves() -> bool:
                try:
                    client.db.set("after-idle-restart", b"x")
                except Unavailable as error:
                    refused.append(error)
                    return False
                return True

            eventually(serves, RECOVERY, "a write after a restart while idle")
        print(f"{mode}: {len(refused)} calls refused after a restart while idle; {failures[-1].message}")
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        if daemon is not None and daemon.process.poll() is None:
            daemon.stop(signal.SIGKILL)
        postgres.stop()

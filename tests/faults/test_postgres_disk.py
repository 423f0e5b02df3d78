"""PostgreSQL out of disk space under a running daemon: RESOURCE_EXHAUSTED, nothing half written, recovery.

The daemon's database lives in a tablespace on a small ext4 file system of its own (see `_disk`), which the
test fills with a ballast file; the server's data directory and WAL stay on the host's disk, as a tablespace
on a separate volume would. Writes that need new space then fail with SQLSTATE 53100 (disk_full), which the
daemon answers with RESOURCE_EXHAUSTED; once the ballast is deleted, writes succeed again without a restart.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest

from stord.client import (
    Client,
    CreateDocument,
    EnqueueJob,
    ResourceExhausted,
    TransactStep,
    UpdateDocument,
    make_event,
    new_event_id,
)
from tests.faults._disk import LoopFilesystem
from tests.faults.test_sqlite_disk import VALUE, Acknowledged, _attempt, _refused
from tests.harness.network import check_host_intact
from tests.harness.postgres import PostgresServer, start_postgres
from tests.harness.served import Served

pytestmark = pytest.mark.process

FULL = "out of disk space"
"""What the daemon's message says when PostgreSQL answers disk_full."""


@dataclass
class DiskDatabase:
    """A PostgreSQL database whose every table lives on a file system the test can fill."""

    server: PostgresServer
    disk: LoopFilesystem
    url: str


@pytest.fixture
def disk_database(tmp_path: Path) -> Iterator[DiskDatabase]:
    # The server runs as `postgres`, which cannot enter pytest's private temporary directories.
    directory = Path(tempfile.mkdtemp(prefix="stord-pgdisk-", dir="/tmp"))
    directory.chmod(0o755)
    disk = LoopFilesystem(directory, size_mb=48)
    server: PostgresServer | None = None
    try:
        disk.mount_or_skip()
        location = disk.mount_point / "tablespace"
        location.mkdir()
        account = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if account is not None:
            os.chown(location, account.pw_uid, account.pw_gid)
        server = start_postgres(tmp_path / "postgres")
        with psycopg.connect(server.url("postgres"), autocommit=True) as connection:
            connection.execute(f"CREATE TABLESPACE small LOCATION '{location}'")
            connection.execute("CREATE DATABASE stord TABLESPACE small")
        yield DiskDatabase(server, disk, server.url("stord"))
    finally:
        if server is not None:
            server.stop()
        disk.unmount()
        check_host_intact(mount_points=(disk.mount_point,))
        shutil.rmtree(directory, ignore_errors=True)


def test_full_postgres_disk_answers_resource_exhausted_and_recovers(
    disk_database: DiskDatabase, tmp_path: Path
) -> None:
    config = tmp_path / "stord.yaml"
    config.write_text("health_check_interval: 0.3\n")
    daemon = Served(tmp_path / "data", "--database", disk_database.url, "--config", str(config))
    disk = disk_database.disk
    acknowledged = Acknowledged()
    try:
        with Client(daemon.address, namespace="disk", timeout=30, retry=None) as client:
            acknowledged.write(client, "before")
            plan = client.documents.create("plans", {"status": "draft"})
            disk.fill()

            refused: ResourceExhausted | None = None
            for index in range(400):  # 100 MB: more than the whole file system holds
                value = os.urandom(VALUE)
                try:
                    client.db.set(f"big-{index}", value)
                except ResourceExhausted as error:
                    refused = error
                    break
                acknowledged.values[f"big-{index}"] = value
            _refused(refused, grpc.StatusCode.RESOURCE_EXHAUSTED, FULL)
            assert refused is not None
            assert "53100" in refused.message, refused.message
            print(f"\n{refused.message}")

            # All or nothing: a transaction, an event batch and a job batch that cannot fit leave no trace.
            big = {"text": os.urandom(VALUE).hex()}
            steps: list[TransactStep] = [
                UpdateDocument("plans", plan.id, {"status": "queued"}, expected_revision=plan.revision),
                CreateDocument("plans", big),
                EnqueueJob("runs", {"plan": plan.id}),
            ]
            _refused(
                _attempt(lambda: client.documents.transact(steps)), grpc.StatusCode.RESOURCE_EXHAUSTED, FULL
            )
            batch = [
                make_event("disk", "agent-1", "custom", event_id=new_event_id(), payload=big)
                for _ in range(3)
            ]
            _refused(_attempt(lambda: client.events.insert(batch)), grpc.StatusCode.RESOURCE_EXHAUSTED, FULL)
            jobs = [EnqueueJob("full", big) for _ in range(3)]
            _refused(
                _attempt(lambda: client.jobs.enqueue_many(jobs)), grpc.StatusCode.RESOURCE_EXHAUSTED, FULL
            )

            acknowledged.check(client)  # reads go on, and nothing of the refused writes shows
            current = client.documents.get("plans", plan.id)
            assert current is not None
            assert (current.revision, current.data["status"]) == (plan.revision, "draft")
            assert client.documents.count("plans") == 1
            assert client.jobs.stats("runs").pending == 0
            assert client.jobs.stats("full").pending == 0
            assert client.events.count(session_id="disk") == len(acknowledged.events)
            assert daemon.process.poll() is None

            disk.free()
            acknowledged.write(client, "after")
            client.documents.transact(steps)
            acknowledged.values["big-after"] = os.urandom(VALUE)
            client.db.set("big-after", acknowledged.values["big-after"])
            acknowledged.check(client)
            assert client.documents.count("plans") == 2
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        if daemon.process.poll() is None:
            daemon.stop(signal.SIGKILL)

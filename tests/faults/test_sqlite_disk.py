"""The SQLite disk full or read-only under a running daemon: clear errors on writes, reads go on, no damage.

The daemon's data directory is on a small ext4 file system of its own (see `_disk`), which the tests fill
with a ballast file or make turn read-only as ext4 does after an error. Afterwards the database file passes
`PRAGMA integrity_check` and a restarted daemon finds every acknowledged write.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from stord.client import Client, ResourceExhausted, StordError, Unavailable, make_event, new_event_id
from tests.faults._disk import LoopFilesystem
from tests.faults._load import (
    NOT_SERVING,
    SERVING,
    database_health,
    eventually,
)
from tests.harness.served import Served

pytestmark = pytest.mark.process

VALUE = 256 * 1024
"""Bytes per value written to fill the disk: a 900 KiB document cannot fit where one of these failed."""


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[LoopFilesystem]:
    filesystem = LoopFilesystem(tmp_path / "disk").mount_or_skip()
    try:
        yield filesystem
    finally:
        filesystem.unmount()


class Acknowledged:
    """Writes of every kind the daemon acknowledged, and a check that a daemon still holds them."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.documents: dict[str, int] = {}
        self.events: list[str] = []

    def write(self, client: Client, tag: str, count: int = 10) -> None:
        for index in range(count):
            key = f"{tag}-{index}"
            client.db.set(key, key.encode())
            self.values[key] = key.encode()
        document = client.documents.create("notes", {"tag": tag})
        self.documents[document.id] = document.revision
        events = [make_event("disk", "agent-1", "custom", event_id=new_event_id()) for _ in range(count)]
        client.events.insert(events)
        self.events.extend(event.id for event in events)

    def check(self, client: Client) -> None:
        keys = sorted(self.values)
        assert client.db.get_many(keys) == [self.values[key] for key in keys]
        for document_id, revision in self.documents.items():
            document = client.documents.get("notes", document_id)
            assert document is not None
            assert document.revision == revision
        assert sorted(event.id for event in client.events.timeline("disk")) == sorted(self.events)
        assert client.events.verify_chain("disk").valid


def _serve(database: Path, tmp_path: Path, synchronous: str = "NORMAL") -> Served:
    """Serve the SQLite file `database`; the data directory and the log stay off the test's disk."""
    config = tmp_path / "stord.yaml"
    config.write_text(f"health_check_interval: 0.3\nsqlite: {{synchronous: {synchronous}}}\n")
    return Served(tmp_path / "data", "--database", f"sqlite:///{database}", "--config", str(config))


def _integrity(database: Path) -> str:
    with sqlite3.connect(database) as connection:
        result: str = connection.execute("PRAGMA integrity_check").fetchone()[0]
    return result


def _refused(write: Exception | None, code: grpc.StatusCode, cause: str) -> None:
    assert isinstance(write, StordError), f"the write was not refused: {write!r}"
    assert write.code == code, write
    assert cause in write.message, write.message


def _attempt(call: object) -> Exception | None:
    """Run a write; return the error it raised, None when it succeeded."""
    assert callable(call)
    try:
        call()
    except StordError as error:
        return error
    return None


def test_full_disk_refuses_writes_with_resource_exhausted_and_recovers(
    disk: LoopFilesystem, tmp_path: Path
) -> None:
    database = disk.mount_point / "stord.db"
    acknowledged = Acknowledged()
    daemon = _serve(database, tmp_path)
    try:
        with Client(daemon.address, namespace="disk", timeout=30, retry=None) as client:
            acknowledged.write(client, "before")
            disk.fill()
            refused: ResourceExhausted | None = None
            for index in range(200):  # 50 MB: more than the whole file system holds
                value = os.urandom(VALUE)
                try:
                    client.db.set(f"big-{index}", value)
                except ResourceExhausted as error:
                    refused = error
                    break
                acknowledged.values[f"big-{index}"] = value
            _refused(refused, grpc.StatusCode.RESOURCE_EXHAUSTED, "the disk is full")
            big_document = {"text": "x" * (900 * 1024)}
            _refused(
                _attempt(lambda: client.documents.create("notes", big_document)),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "the disk is full",
            )

            acknowledged.check(client)  # reads go on
            eventually(lambda: database_health(daemon.address) == {NOT_SERVING}, 10, "NOT_SERVING")
            info = client.get_info().backends[0]
            assert not info.healthy
            assert "the disk is full" in info.detail
            assert daemon.process.poll() is None

            disk.free()
            eventually(lambda: database_health(daemon.address) == {SERVING}, 10, "SERVING again")
            eventually(lambda: client.get_info().backends[0].healthy, 10, "the database healthy in GetInfo")
            acknowledged.write(client, "after")  # the writer thread lived through it
            acknowledged.values["big-after"] = os.urandom(VALUE)
            client.db.set("big-after", acknowledged.values["big-after"])
        assert daemon.stop(signal.SIGTERM) == 0
        assert _integrity(database) == "ok"

        daemon = _serve(database, tmp_path)
        with Client(daemon.address, namespace="disk", timeout=30, retry=None) as client:
            acknowledged.check(client)
    finally:
        daemon.stop(signal.SIGKILL)


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_read_only_file_system_refuses_writes_with_unavailable_and_keeps_reads(
    disk: LoopFilesystem, tmp_path: Path, synchronous: str
) -> None:
    """ext4 turning read-only after an error: like a power cut for what it had not written out yet.

    With synchronous=FULL every acknowledged write was on the disk already and survives the repair. With
    NORMAL the last writes may still have been in the page cache, which the aborted file system drops: the
    database is intact, but recent acknowledged writes may be gone.
    """
    database = disk.mount_point / "stord.db"
    acknowledged = Acknowledged()
    daemon = _serve(database, tmp_path, synchronous)
    try:
        with Client(daemon.address, namespace="disk", timeout=30, retry=None) as client:
            acknowledged.write(client, "before")
            disk.fail_read_only()
            writes = {
                "Set": lambda: client.db.set("late", b"x"),
                "CreateDocument": lambda: client.documents.create("notes", {"late": True}),
                "InsertEvents": lambda: client.events.insert([make_event("disk", "agent-1", "custom")]),
                "Enqueue": lambda: client.jobs.enqueue("late"),
            }
            for name, write in writes.items():
                error = _attempt(write)
                assert error is not None, f"{name} succeeded on a read-only file system"
                _refused(error, grpc.StatusCode.UNAVAILABLE, "read-only")

            acknowledged.check(client)  # reads go on
            eventually(lambda: database_health(daemon.address) == {NOT_SERVING}, 10, "NOT_SERVING")
            info = client.get_info().backends[0]
            assert not info.healthy
            assert "read-only" in info.detail
            assert isinstance(_attempt(lambda: client.db.set("later", b"x")), Unavailable)
            assert daemon.process.poll() is None
        assert daemon.stop(signal.SIGTERM) == 0

        disk.repair()
        assert _integrity(database) == "ok"
        daemon = _serve(database, tmp_path, synchronous)
        # With NORMAL, what survived is up to the page cache: go on in a namespace of its own.
        namespace = "disk" if synchronous == "FULL" else "after-repair"
        with Client(daemon.address, namespace=namespace, timeout=30, retry=None) as client:
            if synchronous == "FULL":
                acknowledged.check(client)
            else:
                acknowledged = Acknowledged()
            acknowledged.write(client, "after")
            acknowledged.check(client)
    finally:
        daemon.stop(signal.SIGKILL)

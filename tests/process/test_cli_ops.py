"""`stord kv | events | jobs` against a real `stord serve`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stord.client import Client, make_event
from stord.server.backends.sqlite import SqliteBackend
from stord.server.config import SqliteOptions
from stord.server.jobs.port import JobLease, NewJob, now_micros
from tests.harness._system import free_port
from tests.harness.clock import ManualClock
from tests.harness.served import STORD, Served

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    process = Served(tmp_path_factory.mktemp("cli-ops") / "data")
    yield process
    if process.process.poll() is None:
        process.stop(signal.SIGKILL)


def stord(served: Served, *arguments: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [STORD, *arguments, "--address", served.address], input=stdin, capture_output=True, timeout=30
    )


def test_kv_set_get_and_keys_in_a_namespace(served: Served) -> None:
    for key, value in [("user:1", "ada"), ("user:2", "grace"), ("team:1", "core")]:
        assert stord(served, "kv", "set", key, value, "--namespace", "ops").returncode == 0
    assert stord(served, "kv", "set", "blob", "-", "--namespace", "ops", stdin=b"\x00\xffraw").returncode == 0

    got = stord(served, "kv", "get", "user:2", "--namespace", "ops")
    assert (got.returncode, got.stdout) == (0, b"grace")
    assert stord(served, "kv", "get", "blob", "--namespace", "ops").stdout == b"\x00\xffraw"
    keys = stord(served, "kv", "keys", "user:*", "--namespace", "ops")
    assert keys.stdout.decode().splitlines() == ["user:1", "user:2"]
    limited = stord(served, "kv", "keys", "--limit", "2", "--namespace", "ops")
    assert len(limited.stdout.decode().splitlines()) == 2

    with Client(served.address, namespace="ops") as client:
        assert client.db.get("team:1") == b"core"
    elsewhere = stord(served, "kv", "get", "user:1", "--namespace", "other")
    assert elsewhere.returncode == 1
    assert elsewhere.stderr.decode().strip() == "stord: user:1: not found"


def test_kv_on_the_cache_with_a_ttl(served: Served) -> None:
    assert stord(served, "kv", "set", "session", "s3cret", "--cache", "--ttl", "60").returncode == 0
    assert stord(served, "kv", "get", "session", "--cache").stdout == b"s3cret"
    assert stord(served, "kv", "get", "session").returncode == 1  # the database is another store
    assert stord(served, "kv", "keys", "sess*", "--cache").stdout == b"session\n"
    refused = stord(served, "kv", "set", "k", "v", "--ttl", "5")
    assert refused.returncode == 1
    assert b"--ttl needs --cache" in refused.stderr


def test_events_tail_prints_new_matching_events_as_json_lines(served: Served) -> None:
    arguments = [STORD, "events", "tail", "--address", served.address, "--namespace", "tail"]
    tail = subprocess.Popen(
        [*arguments, "--session", "s-1", "--severity", "error", "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None
        assert tail.stderr.readline().startswith("stord: tailing events of ")
        with Client(served.address, namespace="tail") as client:
            client.events.insert(
                [
                    make_event("s-1", "a-1", "tool_call", severity="info", event_id="e-1"),
                    make_event("s-2", "a-1", "tool_error", severity="error", event_id="e-2"),
                    make_event(
                        "s-1", "a-1", "tool_error", severity="error", event_id="e-3", payload={"n": 1}
                    ),
                    make_event("s-1", "a-1", "custom", severity="error", event_id="e-4"),
                ]
            )
        stdout, _ = tail.communicate(timeout=20)
    finally:
        tail.kill()
    assert tail.returncode == 0
    printed = [json.loads(line) for line in stdout.splitlines()]
    assert [event["id"] for event in printed] == ["e-3", "e-4"]
    assert '"payload":{"n":1}' in stdout  # a whole number as sent, not the Struct's double 1.0
    # Enum names as --type and --severity take them; every field present, numbers as numbers.
    assert (printed[0]["event_type"], printed[0]["severity"]) == ("tool_error", "error")
    assert [event["chain_index"] for event in printed] == [1, 2]
    assert printed[1]["prev_hash"] == printed[0]["hash"]
    assert len(printed[0]["hash"]) == 64
    assert printed[1]["payload"] == {}
    assert "payload_json" not in printed[0]  # input-only fields, empty on output: left out
    assert "metadata_json" not in printed[0]


def test_ctrl_c_exits_130_not_0(served: Served) -> None:
    tail = subprocess.Popen(
        [STORD, "events", "tail", "--address", served.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None
        assert tail.stderr.readline().startswith("stord: tailing events of ")  # inside the command
        tail.send_signal(signal.SIGINT)
        tail.communicate(timeout=20)
    finally:
        tail.kill()
    assert tail.returncode == 130  # as a shell reports Ctrl-C: a caller must not take it for success


def test_jobs_stats_as_a_table_and_as_json(served: Served) -> None:
    with Client(served.address, namespace="jobs") as client:
        for index in range(3):
            client.jobs.enqueue("emails", {"n": index})
        client.jobs.acknowledge(client.jobs.dequeue("emails"))
        client.jobs.dequeue("emails")

    table = stord(served, "jobs", "stats", "emails", "empty", "--namespace", "jobs")
    assert table.returncode == 0
    assert [line.split() for line in table.stdout.decode().splitlines()] == [
        ["queue", "pending", "running", "retrying", "completed", "failed"],
        ["emails", "1", "1", "0", "1", "0"],
        ["empty", "0", "0", "0", "0", "0"],
    ]
    as_json = stord(served, "jobs", "stats", "emails", "--json", "--namespace", "jobs")
    assert json.loads(as_json.stdout) == {
        "queue": "emails",
        "pending": 1,
        "running": 1,
        "retrying": 0,
        "completed": 1,
        "failed": 0,
    }


def test_an_unreachable_daemon_is_a_clear_error() -> None:
    result = subprocess.run(
        [STORD, "kv", "get", "k", "--address", f"127.0.0.1:{free_port()}", "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("stord: ")
    assert "UNAVAILABLE" in result.stderr


def test_an_unknown_event_type_is_a_usage_error(served: Served) -> None:
    result = stord(served, "events", "tail", "--type", "bogus")
    assert result.returncode == 2
    assert result.stderr.decode().startswith("stord: event_type must be one of ")


def test_kv_get_ends_with_a_newline_on_a_terminal_only(served: Served) -> None:
    assert stord(served, "kv", "set", "line", "no newline").returncode == 0
    assert stord(served, "kv", "get", "line").stdout == b"no newline"  # a pipe gets the value exactly
    leader, follower = pty.openpty()
    try:
        got = subprocess.run(
            [STORD, "kv", "get", "line", "--address", served.address], stdout=follower, timeout=30
        )
        os.close(follower)
        printed = b""
        with contextlib.suppress(OSError):  # EIO once the child's side is closed and drained
            while chunk := os.read(leader, 1024):
                printed += chunk
    finally:
        os.close(leader)
    assert got.returncode == 0
    assert printed == b"no newline\r\n"  # the terminal turns the added \n into \r\n


def test_jobs_purge_deletes_old_finished_jobs_in_the_database(tmp_path: Path) -> None:
    path = tmp_path / "stord.db"
    clock = ManualClock()
    clock.advance(-10 * 86_400)  # the jobs below finished ten days ago

    async def prepare() -> None:
        backend = SqliteBackend(path, options=SqliteOptions(), clock=clock)
        await backend.open()
        try:
            jobs = backend.jobs()
            now = now_micros(clock)
            await jobs.enqueue("ns", [NewJob(id=name, queue="q", payload={}, run_at=now) for name in "abc"])
            leased = await jobs.dequeue("ns", "q", limit=2, lease=60_000_000)
            await jobs.acknowledge("ns", [JobLease(leased[0].id, leased[0].lease_token or "")])
            await jobs.fail("ns", JobLease(leased[1].id, leased[1].lease_token or ""), error="x", retry=False)
        finally:
            await backend.close()

    asyncio.run(prepare())
    database = f"sqlite:///{path}"

    def purge(*flags: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([STORD, "jobs", "purge", "--database", database, *flags], capture_output=True)

    kept = purge("--completed-job-retention-days", "0")
    assert (kept.returncode, kept.stdout) == (0, b"deleted 0 completed and 0 failed jobs\n")
    done = purge()  # the defaults: completed after 7 days, failed after 30
    assert (done.returncode, done.stdout) == (0, b"deleted 1 completed and 0 failed jobs\n")
    done = purge("--failed-job-retention-days", "9")
    assert (done.returncode, done.stdout) == (0, b"deleted 0 completed and 1 failed jobs\n")
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT id, status FROM jobs").fetchall() == [("c", "pending")]
    refused = purge("--failed-job-retention-days", "-1")
    assert refused.returncode == 2
    assert b"failed_job_retention_days" in refused.stderr


def test_jobs_purge_of_a_mistyped_data_dir_creates_nothing(tmp_path: Path) -> None:
    nothing = tmp_path / "nothing"
    purge = subprocess.run(
        [STORD, "jobs", "purge", "--data-dir", str(nothing)], capture_output=True, text=True
    )
    assert purge.returncode == 1
    assert purge.stderr == f"stord: there is no SQLite database at {nothing / 'stord.db'}\n"
    assert not nothing.exists()


def test_a_negative_limit_or_count_is_a_usage_error() -> None:
    for command in (["kv", "keys", "--limit", "-1"], ["events", "tail", "--count", "-1"]):
        refused = subprocess.run([STORD, *command], capture_output=True, text=True, timeout=30)
        assert refused.returncode == 2, command
        assert "must be 0 (no limit) or more, not -1" in refused.stderr, command


@pytest.mark.parametrize("command", [["config", "--json"], ["kv", "keys"]])
def test_a_reader_that_went_away_ends_the_command_quietly(served: Served, command: list[str]) -> None:
    with Client(served.address) as client:
        client.db.set("piped", b"v")
    address = ["--address", served.address] if command[0] == "kv" else []
    gone, stdout = os.pipe()
    os.close(gone)  # as `| head` does once it has read enough: every write now fails with EPIPE
    try:
        result = subprocess.run(
            [STORD, *command, *address],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(stdout)
    assert (result.returncode, result.stderr) == (141, "")  # 128 + SIGPIPE, and no traceback

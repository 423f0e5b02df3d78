"""`stord serve` as a real process: health, reflection, crash safety, graceful shutdown, the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from stord.client import Client, StordError
from stord.server.schema import load_migrations
from tests.harness._system import free_port
from tests.harness.served import STORD, Served, health

pytestmark = pytest.mark.process


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def served(data_dir: Path) -> Iterator[Served]:
    process = Served(data_dir)
    yield process
    if process.process.poll() is None:
        process.stop(signal.SIGKILL)


def test_serves_with_sqlite_in_the_data_dir_and_says_so(served: Served, data_dir: Path) -> None:
    assert (data_dir / "stord.db").exists()
    serving = next(event for event in served.events() if event["event"] == "serving")
    assert serving["listen"] == served.address
    assert serving["database"] == f"sqlite:///{data_dir.resolve() / 'stord.db'}"
    with Client(served.address) as client:
        info = client.get_info()
    assert [(backend.kind, backend.healthy) for backend in info.backends] == [
        ("sqlite", True),
        ("memory", True),
    ]


def test_health_per_service_and_reflection(served: Served) -> None:
    assert health(served.address).stdout.strip().endswith("SERVING")
    assert health(served.address, "--service", "stord.v1.DatabaseService").returncode == 0
    assert health(served.address, "--service", "stord.v1.CacheService").returncode == 0
    unknown = health(served.address, "--service", "no.such.Service")
    assert unknown.returncode == 1
    assert f"{served.address}: NOT_FOUND: unknown service 'no.such.Service'; it serves " in unknown.stderr
    assert "stord.v1.AdminService, " in unknown.stderr
    assert "stord.v1.DatabaseService" in unknown.stderr
    assert "grpc." not in unknown.stderr  # the health check answers for stord's services only
    with grpc.insecure_channel(served.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"stord.v1.CacheService", "stord.v1.DatabaseService", "stord.v1.AdminService"} <= services
    assert "grpc.health.v1.Health" in services


def test_health_fails_when_nothing_listens() -> None:
    result = health(f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr


def test_acknowledged_writes_survive_kill_9(served: Served, data_dir: Path) -> None:
    with Client(served.address) as client:
        for index in range(200):
            client.db.set(f"key-{index}", b"%d" % index)
            client.db.append("log", b"%d" % index)
    served.stop(signal.SIGKILL)
    restarted = Served(data_dir)
    try:
        with Client(restarted.address) as client:
            assert client.db.get_many([f"key-{index}" for index in range(200)]) == [
                b"%d" % index for index in range(200)
            ]
            assert client.db.get_range("log", 0, 0)[-1] == b"199"
            assert client.db.length("log") == 200
    finally:
        restarted.stop()


def test_sigterm_during_traffic_drains_and_loses_no_acknowledged_write(
    served: Served, data_dir: Path
) -> None:
    acknowledged: list[int] = []
    failures: list[StordError] = []
    stop = threading.Event()

    def write() -> None:
        with Client(served.address, timeout=5) as client:
            index = 0
            while not stop.is_set():
                try:
                    client.db.set(f"w-{index}", b"x")
                    acknowledged.append(index)
                except StordError as error:
                    failures.append(error)
                    return
                index += 1

    writers = [threading.Thread(target=write) for _ in range(4)]
    for writer in writers:
        writer.start()
    time.sleep(1.0)
    assert served.stop(signal.SIGTERM) == 0
    stop.set()
    for writer in writers:
        writer.join(10)
    assert acknowledged, "no write went through before SIGTERM"
    # Calls arriving once shutdown began are refused by the transport (UNAVAILABLE or CANCELLED, never run),
    # or, when one races the connection's close, never answered (DEADLINE_EXCEEDED: grpc/grpc#10418). Either
    # way the caller was not told OK, and every call that reached a servicer finished (the access log below).
    in_flight_outcomes = {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
    assert {failure.code for failure in failures} <= in_flight_outcomes
    events = served.events()
    assert {event["status"] for event in events if event["event"] == "rpc"} == {"OK"}
    assert "draining" in [event["event"] for event in events]
    assert events[-1]["event"] == "stopped"

    restarted = Served(data_dir)
    try:
        with Client(restarted.address) as client:
            keys = [f"w-{index}" for index in acknowledged]
            for start in range(0, len(keys), 1000):
                assert None not in client.db.get_many(keys[start : start + 1000])
    finally:
        restarted.stop()


def test_unix_socket(data_dir: Path, tmp_path: Path) -> None:
    socket_path = tmp_path / "sock" / "stord.sock"
    process = Served(data_dir, "--unix-socket", str(socket_path))
    try:
        with Client(f"unix:{socket_path}") as client:
            client.cache.set("over-unix", b"yes")
            assert client.cache.get("over-unix") == b"yes"
        assert health(f"unix:{socket_path}").returncode == 0
    finally:
        assert process.stop() == 0
    assert not socket_path.exists()


def test_unreachable_cache_falls_back_to_memory_and_says_so(data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "stord.yaml"
    config.write_text("connect:\n  attempts: 2\n  initial_backoff: 0.05\n")
    dead_redis = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    process = Served(data_dir, "--config", str(config), "--cache", dead_redis)
    try:
        with Client(process.address) as client:
            client.cache.set("k", b"v")
            assert client.cache.get("k") == b"v"
            cache = client.get_info().backends[1]
        assert (cache.kind, cache.fallback) == ("memory", True)
        assert cache.configured_url == dead_redis.replace("hunter2", "***")
        assert "hunter2" not in process.log.read_text()
        assert any(event["event"] == "backend_fallback" for event in process.events())
    finally:
        process.stop()


def test_unreachable_database_stops_startup(tmp_path: Path) -> None:
    config = tmp_path / "stord.yaml"
    config.write_text("connect:\n  attempts: 2\n  initial_backoff: 0.05\n")
    dead = f"postgresql://stord:hunter2@127.0.0.1:{free_port()}/stord"
    result = subprocess.run(
        [STORD, "serve", "--config", str(config), "--database", dead, "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "startup_failed" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


def _failed_startup(data_dir: Path, *arguments: str) -> str:
    """Run a `stord serve` that cannot start; return its log line's error, checking it opened nothing."""
    result = subprocess.run(
        [STORD, "serve", "--data-dir", str(data_dir), *arguments], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stderr) == (1, "")  # no log of gRPC's own on stderr either
    (line,) = result.stdout.splitlines()  # no `stopped`: it never started
    failed = json.loads(line)
    assert failed["event"] == "startup_failed"
    assert not data_dir.exists()  # no database created, no migration run
    return str(failed["error"])


def test_a_taken_port_stops_startup_before_anything_is_opened(data_dir: Path, tmp_path: Path) -> None:
    socket_path = tmp_path / "theirs.sock"
    with socket.socket() as theirs, socket.socket(socket.AF_UNIX) as their_unix_socket:
        theirs.bind(("127.0.0.1", 0))
        theirs.listen()
        their_unix_socket.bind(str(socket_path))
        address = f"127.0.0.1:{theirs.getsockname()[1]}"
        error = _failed_startup(data_dir, "--listen", address, "--unix-socket", str(socket_path))
        assert error == f"cannot listen on {address}: Address already in use"
        assert socket_path.exists()  # the Unix socket of whoever listens there is left alone


def test_a_refused_address_or_a_missing_tls_file_stops_startup_quietly(data_dir: Path) -> None:
    public = f"0.0.0.0:{free_port()}"
    assert _failed_startup(data_dir, "--listen", public).startswith(f"refusing to serve {public} without")
    missing = data_dir.parent / "missing.pem"
    tls = ["--listen", f"127.0.0.1:{free_port()}", "--tls-cert", str(missing), "--tls-key", str(missing)]
    assert _failed_startup(data_dir, *tls) == f"cannot read TLS file {missing}: No such file or directory"


def test_unread_stord_variables_are_logged_with_a_suggestion(data_dir: Path) -> None:
    environ = {name: value for name, value in os.environ.items() if not name.startswith("STORD_")}
    environ |= {"STORD_DATABASE": "memory://", "STORD_LISTEN": f"0.0.0.0:{free_port()}"}
    result = subprocess.run(
        [STORD, "serve", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60, env=environ
    )
    assert result.returncode == 1  # the refused public listener stops startup after the warning
    warning, failed = (json.loads(line) for line in result.stdout.splitlines())
    assert warning["event"] == "unknown_environment_variable"
    assert warning["level"] == "warning"
    assert (warning["variable"], warning["did_you_mean"]) == ("STORD_DATABASE", "STORD_DATABASE_URL")
    assert failed["event"] == "startup_failed"


def test_bad_settings_exit_2_with_the_reason() -> None:
    result = subprocess.run(
        [STORD, "serve", "--listen", "nowhere"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "listen" in result.stderr


def test_migrate_builds_the_schema_once(tmp_path: Path) -> None:
    database = tmp_path / "migrated.db"
    environment = {**os.environ, "STORD_DATABASE_URL": f"sqlite:///{database}"}
    for _ in range(2):
        result = subprocess.run(
            [STORD, "migrate"], capture_output=True, text=True, env=environment, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
    import sqlite3

    with sqlite3.connect(database) as connection:
        versions = [row[0] for row in connection.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [migration.version for migration in load_migrations("sqlite")]


def test_version() -> None:
    result = subprocess.run([STORD, "version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip() == "0.1.0"


def test_metrics_endpoint_starts_and_stops_with_the_daemon(data_dir: Path) -> None:
    metrics_port = free_port()
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    process = Served(data_dir, "--metrics-listen", f"127.0.0.1:{metrics_port}")
    try:
        with Client(process.address) as client:
            client.db.set("k", b"v")
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        assert (
            'grpc_server_handled_total{grpc_code="OK",grpc_method="Set",grpc_service="stord.v1.DatabaseService",'
            'grpc_type="unary"} 1.0'
        ) in text
        serving = next(event for event in process.events() if event["event"] == "serving")
        assert serving["metrics"] == url
        assert process.stop() == 0
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=2)
    finally:
        if process.process.poll() is None:
            process.stop(signal.SIGKILL)

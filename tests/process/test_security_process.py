"""`stord serve` with API keys as a real process: SIGHUP reload on open connections, no secret in the logs,
and the refusal to serve a public address without keys."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stord.client import Client, Unauthenticated
from stord.server.rpc.auth import Role
from tests.harness._system import free_port
from tests.harness.auth import Tenant, write_keys
from tests.harness.served import STORD, Served

pytestmark = pytest.mark.process

OWNER = Tenant("owner", "app", "svc-app", Role.READ_WRITE)
LATECOMER = Tenant("latecomer", "app", "svc-late", Role.READ_ONLY)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return write_keys(tmp_path / "keys.yaml", [OWNER])


@pytest.fixture
def secured(tmp_path: Path, keys_file: Path) -> Iterator[Served]:
    process = Served(tmp_path / "data", "--api-keys-file", str(keys_file))
    yield process
    if process.process.poll() is None:
        process.stop(signal.SIGKILL)


def _wait_for_event(served: Served, name: str, timeout: float = 10) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in served.events():
            if event["event"] == name:
                return event
        time.sleep(0.05)
    raise AssertionError(f"no {name} event in:\n{served.log.read_text()}")


def test_sighup_reloads_keys_without_dropping_connections(secured: Served, keys_file: Path) -> None:
    with (
        Client(secured.address, api_key=OWNER.secret) as owner,
        Client(secured.address, api_key=LATECOMER.secret) as latecomer,
    ):
        owner.db.set("k", b"v")
        with pytest.raises(Unauthenticated):
            latecomer.db.get("k")
        keys_file.write_text("keys: [ {id: broken")
        secured.process.send_signal(signal.SIGHUP)
        failed = _wait_for_event(secured, "api_keys_reload_failed")
        assert failed["level"] == "error"
        assert owner.db.get("k") == b"v"  # the bad file left the old keys in force
        write_keys(keys_file, [OWNER, LATECOMER])
        secured.process.send_signal(signal.SIGHUP)
        _wait_for_event(secured, "api_keys_reloaded")
        assert latecomer.db.get("k") == b"v"
        assert owner.db.get("k") == b"v"  # on the channel opened before the reload
    log = secured.log.read_text()
    for tenant in (OWNER, LATECOMER):
        assert tenant.secret not in log
        assert tenant.entry.sha256 not in log


def test_garbage_bytes_do_not_disturb_other_clients(secured: Served) -> None:
    with Client(secured.address, api_key=OWNER.secret) as client:
        client.db.set("before", b"1")
        for garbage in (
            b"\x00" * 64,
            b"GET / HTTP/1.1\r\n\r\n",
            bytes(range(256)) * 8,
            b"PRI * HTTP/2.0\r\n",
        ):
            with socket.create_connection(("127.0.0.1", secured.port), timeout=2) as raw:
                raw.sendall(garbage)
                raw.settimeout(1)
                # The daemon may answer or just close it; either way it must keep serving the others.
                with contextlib.suppress(OSError):
                    raw.recv(1024)
            assert client.db.get("before") == b"1"
    assert secured.process.poll() is None


def test_a_public_address_without_keys_needs_insecure(tmp_path: Path) -> None:
    address = f"0.0.0.0:{free_port()}"
    refused = subprocess.run(
        [STORD, "serve", "--listen", address, "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1
    assert "--insecure" in refused.stdout + refused.stderr

"""The link harness itself: a partition drops packets silently, healing restores them, and nothing is left."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from tests.harness.network import DelayProxy, IsolatedHost, isolated_host


def _listen_inside(host: IsolatedHost, port: int) -> subprocess.Popen[bytes]:
    """Start a TCP echo server inside the namespace."""
    server = "\n".join(
        [
            "import socket",
            f"s = socket.create_server(({host.address!r}, {port}))",
            "while True:",
            "    c, _ = s.accept()",
            "    c.sendall(c.recv(64))",
            "    c.close()",
        ]
    )
    return subprocess.Popen([*host.command, "python3", "-c", server])


def _echo(address: str, port: int, timeout: float) -> bytes:
    with socket.create_connection((address, port), timeout=timeout) as connection:
        connection.sendall(b"ping")
        return connection.recv(64)


def _wait_echo(address: str, port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            assert _echo(address, port, timeout=1) == b"ping"
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_partition_drops_silently_and_heal_restores() -> None:
    with isolated_host() as host:
        server = _listen_inside(host, 7000)
        try:
            _wait_echo(host.address, 7000)
            host.partition()
            started = time.monotonic()
            with pytest.raises(TimeoutError):  # no refusal, no reset: the SYN just goes unanswered
                _echo(host.address, 7000, timeout=1)
            assert time.monotonic() - started >= 0.9
            host.heal()
            _wait_echo(host.address, 7000)

            proxy = DelayProxy(host.address, 7000, delay=0.2).start()
            try:
                started = time.monotonic()
                assert _echo("127.0.0.1", proxy.port, timeout=5) == b"ping"
                assert time.monotonic() - started >= 0.4  # 0.2 s each way
            finally:
                proxy.stop()
        finally:
            server.kill()
            server.wait()
    # isolated_host checked on exit that the namespace and veth are gone and /dev/null is intact


def test_a_failing_test_leaves_nothing_behind() -> None:
    names: list[str] = []

    def failing_test() -> None:
        with isolated_host() as host:
            names.append(host.name)
            host.partition()
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        failing_test()
    assert names
    assert names[0] not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout

"""A throwaway Redis on a free port: no persistence, stopped by the pid it wrote."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

from tests.harness._system import ensure_installed, free_port
from tests.harness.network import IsolatedHost

__all__ = ["RedisServer", "start_redis"]

_READY_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_ATTEMPTS = 3
"""Ports are chosen free but may be taken before Redis binds them; a few fresh ports make that harmless."""


@dataclass
class RedisServer:
    """A running redis-server that this harness started."""

    port: int
    url: str
    pidfile: pathlib.Path
    logfile: pathlib.Path
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        """Terminate the server by its pid and wait until it is gone; safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        pid = _read_pid(self.pidfile)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, _STOP_TIMEOUT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, _STOP_TIMEOUT)


def start_redis(
    base_dir: pathlib.Path, *, port: int | None = None, host: IsolatedHost | None = None
) -> RedisServer:
    """Start redis-server under `base_dir` on a free 127.0.0.1 port and return once it answers PING.

    With `port`, start on that port (once, no retries): a restart of a server stopped before. With `host`,
    run it inside that network namespace, listening on its address (protected mode off: only this host's
    end of the namespace's link can reach it).
    """
    address = "127.0.0.1" if host is None else host.address
    inside = [] if host is None else [*host.command]
    exposed = [] if host is None else ["--protected-mode", "no"]
    binary = ensure_installed("redis-server", [], "redis-server")
    failures: list[str] = []
    ports = [port] if port is not None else [free_port() for _ in range(_ATTEMPTS)]
    for port in ports:
        directory = base_dir / f"redis-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        server = RedisServer(
            port=port,
            url=f"redis://{address}:{port}/0",
            pidfile=directory / "redis.pid",
            logfile=directory / "redis.log",
        )
        command = [
            *inside,
            str(binary),
            "--port", str(port),
            "--bind", address,
            *exposed,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "yes",
            "--pidfile", str(server.pidfile),
            "--dir", str(directory),
            "--logfile", str(server.logfile),
        ]  # fmt: skip
        launched = subprocess.run(command, capture_output=True, text=True, check=False)
        if launched.returncode == 0 and _wait_ready(server, address, _READY_TIMEOUT):
            return server
        server.stop()
        log = server.logfile.read_text(errors="replace") if server.logfile.exists() else "(no log written)"
        failures.append(
            f"port {port}: exit status {launched.returncode}, stderr {launched.stderr.strip()!r}\n"
            f"--- {server.logfile} ---\n{log[-4000:]}"
        )
    raise RuntimeError("redis-server did not start:\n" + "\n".join(failures))


def _wait_ready(server: RedisServer, address: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Only our pid being alive proves that the PONG comes from our server and not another on the port.
        pid = _read_pid(server.pidfile)
        if pid is not None:
            if not _alive(pid):
                return False
            if _answers_ping(address, server.port):
                return True
        time.sleep(0.02)
    return False


def _answers_ping(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _read_pid(pidfile: pathlib.Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    # A daemonized server is reparented; when this process is its reaper (PID 1 in a container) an exited
    # server lingers as a zombie until reaped, so reap it if it is ours and treat a zombie as gone.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False

"""What each backend needs to run, and `stord serve` as a subprocess on top of it.

Throwaway PostgreSQL and Redis servers come from the test harness; everything is stopped through the
`ExitStack` it was registered on, so Ctrl-C and failures clean up too.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from stord.client import Client, StordError
from stord.v1 import admin_pb2
from tests.harness._system import free_port
from tests.harness.postgres import start_postgres
from tests.harness.redis import start_redis

__all__ = ["BACKENDS", "Backend", "Deployment", "StordDaemon", "create_schema"]

STORD = str(Path(sys.executable).parent / "stord")

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Deployment:
    """Where stord keeps its data (both roles), and where the raw side does the same work, if it can."""

    stord_url: str
    raw_url: str | None


@dataclass(frozen=True)
class Backend:
    """One backend to benchmark: `kind` as AdminService reports it, `deploy` starts what it needs."""

    name: str
    kind: str
    deploy: Callable[[Path, ExitStack], Deployment]


def _sqlite(workdir: Path, stack: ExitStack) -> Deployment:
    # Separate files, so the raw side never waits for the daemon's writer lock.
    return Deployment(f"sqlite:///{workdir / 'stord.db'}", f"sqlite:///{workdir / 'raw.db'}")


def _postgres(workdir: Path, stack: ExitStack) -> Deployment:
    server = start_postgres(workdir)
    stack.callback(server.stop)
    return Deployment(server.create_database("stord"), server.create_database("raw"))


def _redis(workdir: Path, stack: ExitStack) -> Deployment:
    server = start_redis(workdir)
    stack.callback(server.stop)
    return Deployment(server.url, server.url)  # raw keys never start with stord's `stord:` prefix


def _memory(workdir: Path, stack: ExitStack) -> Deployment:
    return Deployment("memory://", None)


BACKENDS = {
    backend.name: backend
    for backend in (
        Backend("sqlite", "sqlite", _sqlite),
        Backend("postgres", "postgres", _postgres),
        Backend("redis", "redis", _redis),
        Backend("memory", "memory", _memory),
    )
}


class DaemonError(RuntimeError):
    """stord failed to start or to serve; the message ends with the daemon's log."""


def _describe(info: admin_pb2.BackendInfo) -> str:
    role = admin_pb2.BackendRole.Name(info.role).removeprefix("BACKEND_ROLE_").lower()
    health = "healthy" if info.healthy else f"unhealthy ({info.detail})"
    fallback = f", a fallback for {info.configured_url}" if info.fallback else ""
    return f"{role} role on {info.kind}, {health}{fallback}"


def _is_successful_rpc(line: str) -> bool:
    try:
        event = json.loads(line)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("event") == "rpc" and event.get("status") == "OK"


def create_schema(url: str) -> None:
    """Give a raw database the schema stord uses, with `stord migrate` (nothing to create on Redis)."""
    if url.startswith("redis:"):
        return
    done = subprocess.run([STORD, "migrate", "--database", url], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DaemonError(f"stord migrate {url} failed:\n{done.stdout}{done.stderr}")


class StordDaemon:
    """One `stord serve` process with the default `info` access log going to `log_path`."""

    def __init__(self, url: str, workdir: Path, extra: Sequence[str] = ()) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = workdir / f"stord-{self.address.rpartition(':')[2]}.log"
        command = [
            STORD, "serve",
            "--listen", self.address,
            "--data-dir", str(workdir / "data"),
            "--database", url,
            "--cache", url,
            *extra,
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            # A session of its own: Ctrl-C reaches only the benchmark, which then stops the daemon itself.
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @classmethod
    @contextlib.contextmanager
    def serving(cls, url: str, kind: str, workdir: Path, extra: Sequence[str] = ()) -> Iterator[StordDaemon]:
        """Start a daemon (`extra`: more flags), wait until it serves both roles on `kind`, stop it after."""
        daemon = cls(url, workdir, extra)
        try:
            daemon._wait_serving(kind)
            yield daemon
        finally:
            daemon.stop()

    @property
    def pid(self) -> int:
        return self._process.pid

    def log_excerpt(self, lines: int = 12) -> str:
        """The daemon's exit status if it exited, and the last lines of its log but successful RPCs."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        notable = [line for line in text.splitlines() if not _is_successful_rpc(line)][-lines:]
        status = self._process.poll()
        head = "stord is running" if status is None else f"stord exited with status {status}"
        return "\n".join([f"{head}; the last lines of its log but successful RPCs:", *notable])

    def _wait_serving(self, kind: str) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DaemonError(f"stord did not start.\n{self.log_excerpt()}")
            with contextlib.suppress(StordError), Client(self.address, timeout=1) as client:
                backends = client.get_info().backends
                wrong = [
                    _describe(info)
                    for info in backends
                    if info.kind != kind or info.fallback or not info.healthy
                ]
                if wrong:  # e.g. a cache fallen back to memory would benchmark the wrong thing
                    raise DaemonError(
                        f"stord does not serve on {kind}: {'; '.join(wrong)}\n{self.log_excerpt()}"
                    )
                return
            time.sleep(0.1)
        raise DaemonError(f"stord did not answer within {_START_TIMEOUT:.0f} s:\n{self.log_excerpt()}")

    def stop(self) -> None:
        """SIGTERM (a graceful stop), then SIGKILL if it lingers."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

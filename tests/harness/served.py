"""`stord serve` as a subprocess: started on a free port (or a given one), healthy before it is returned."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness._system import free_port

__all__ = ["STORD", "Served", "health"]

STORD = str(Path(sys.executable).parent / "stord")
_INTERNAL_ERROR_EVENTS = ("rpc_failed", "health_check_crashed", "expiry_sweep_crashed")


class Served:
    """One `stord serve` process and its output.

    `port` None picks a free one; give the port of a daemon that was stopped to restart it where clients
    already point. Each start appends to the log of its port.
    """

    def __init__(self, data_dir: Path, *extra: str, port: int | None = None) -> None:
        self.port = free_port() if port is None else port
        self.address = f"127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"stord-{self.port}.log"
        arguments = [STORD, "serve", "--listen", self.address, "--data-dir", str(data_dir), *extra]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT)
        try:
            self.wait_healthy()
        except BaseException:
            self.process.kill()
            self.process.wait()
            raise

    def wait_healthy(self, timeout: float = 60) -> None:
        """Poll health in process: a `stord health` process per probe is slow on a busy machine."""
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            probe = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"stord exited with {self.process.returncode}:\n{self.log.read_text()}"
                    )
                try:
                    answer = probe.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.RpcError:
                    pass
                else:
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.05)
        raise AssertionError(f"stord did not become healthy:\n{self.log.read_text()}")

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def internal_errors(self) -> list[str]:
        """Return the lines of this port's log that report a bug: an INTERNAL answer, a crashed task."""
        return [
            line
            for line in self.log.read_text(errors="backslashreplace").splitlines()
            if any(f'"event":"{name}"' in line for name in _INTERNAL_ERROR_EVENTS)
        ]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Stop the daemon; fail when it logged an internal error (INTERNAL is a bug everywhere)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout)
        found = self.internal_errors()
        assert not found, "stord logged internal errors:\n" + "\n".join(found)
        return code


def health(address: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STORD, "health", "--address", address, "--timeout", "1", *extra], capture_output=True, text=True
    )

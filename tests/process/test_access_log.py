"""Access log options: only slow and failed calls, sampling, through a real `stord serve`."""

from __future__ import annotations

import math
import signal
import subprocess
from pathlib import Path

import pytest

from stord.client import Client, InvalidArgument
from stord.server.logs import AccessLog
from tests.harness.served import STORD, Served

pytestmark = pytest.mark.process


def rpc_lines(served: Served) -> list[dict[str, object]]:
    return [event for event in served.events() if event["event"] == "rpc"]


def test_only_slow_and_failed_calls(tmp_path: Path) -> None:
    served = Served(tmp_path / "data", "--access-log", "slow-and-failed", "--slow-call-ms", "200")
    try:
        with Client(served.address, namespace="logs") as client:
            for index in range(20):
                client.db.set(f"k{index}", b"v")
            with pytest.raises(InvalidArgument):
                client.db.set("", b"no key")
            assert client.jobs.dequeue("empty", wait=0.5) == []  # a long poll: slow
    finally:
        assert served.stop() == 0
    logged = [(line["method"], line["status"]) for line in rpc_lines(served)]
    assert logged == [
        ("/stord.v1.DatabaseService/Set", "INVALID_ARGUMENT"),
        ("/stord.v1.JobQueueService/Dequeue", "OK"),
    ]


def test_sampling_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORD_ACCESS_LOG_SAMPLE", "0.5")  # the daemon inherits it
    served = Served(tmp_path / "data")
    try:
        with Client(served.address, namespace="logs") as client:
            for index in range(400):
                client.db.set(f"k{index}", b"v")
            with pytest.raises(InvalidArgument):
                client.db.set("", b"no key")
    finally:
        assert served.stop() == 0
    lines = rpc_lines(served)
    sets = sum(line["status"] == "OK" for line in lines)
    assert 120 < sets < 280  # 400 calls at one half: outside this by chance about once in 10^15 runs
    assert sum(line["status"] == "INVALID_ARGUMENT" for line in lines) == 1  # failures always


def test_every_call_by_default(tmp_path: Path) -> None:
    served = Served(tmp_path / "data")
    try:
        with Client(served.address) as client:
            for index in range(10):
                client.db.set(f"k{index}", b"v")
    finally:
        served.stop(signal.SIGTERM)
    assert len(rpc_lines(served)) == 10


def test_the_policy() -> None:
    quiet = AccessLog(only_slow_and_failed=True, slow_seconds=1.0)
    assert not quiet.wants(ok=True, seconds=0.5)
    assert quiet.wants(ok=True, seconds=1.0)
    assert quiet.wants(ok=False, seconds=0.0)
    stream = AccessLog(only_slow_and_failed=True, slow_seconds=math.inf)
    assert not stream.wants(ok=True, seconds=3600)
    none_sampled = AccessLog(sample=1e-9, slow_seconds=1.0)
    assert sum(none_sampled.wants(ok=True, seconds=0.0) for _ in range(1000)) == 0
    assert none_sampled.wants(ok=False, seconds=0.0)


def test_bad_values_are_refused_with_the_setting_named() -> None:
    for flags, message in [
        (["--access-log-sample", "0"], "access_log_sample"),
        (["--access-log-sample", "1.5"], "access_log_sample"),
        (["--slow-call-ms", "-1"], "slow_call_ms"),
    ]:
        failed = subprocess.run([STORD, "serve", *flags], capture_output=True, text=True, timeout=30)
        assert failed.returncode == 2, flags
        assert message in failed.stderr, flags

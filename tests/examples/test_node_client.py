"""The Node.js example (examples/node) against a real `stord serve`: key-value, 10,000 events, jobs."""

from __future__ import annotations

import hashlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness._system import ensure_installed, free_port
from tests.harness.served import STORD, Served

pytestmark = pytest.mark.process

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"
STAMP = EXAMPLE / "node_modules" / ".stord-installed"


def _install_packages() -> Path:
    """Return the node binary once examples/node has its npm packages (`npm ci` when the lock changed)."""
    node = ensure_installed("node", [], "nodejs")
    npm = ensure_installed("npm", [], "npm")
    lock = hashlib.sha256((EXAMPLE / "package-lock.json").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != lock:
        subprocess.run(
            [str(npm), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=EXAMPLE,
            check=True,
            capture_output=True,
            timeout=300,
        )
        STAMP.write_text(lock)
    return node


@pytest.fixture(scope="module")
def node() -> Path:
    return _install_packages()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    process = Served(tmp_path / "data")
    yield process
    if process.process.poll() is None:
        process.stop(signal.SIGKILL)


def test_node_client_sets_ingests_queries_and_works_jobs(node: Path, served: Served) -> None:
    result = subprocess.run(
        [str(node), "stord-demo.js", "--address", served.address, "--namespace", "node-example"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    assert lines[-1] == "ok"
    assert any(line.startswith("events: ingested 10000 in 10 batches") for line in lines)
    assert "events: read back 10000 events, counted 10000, hash chain verified on both sides" in lines
    assert any(line.startswith("jobs: enqueued, dequeued and acknowledged") for line in lines)


def test_node_client_reports_an_unreachable_daemon(node: Path) -> None:
    result = subprocess.run(
        [str(node), "stord-demo.js", "--address", f"127.0.0.1:{free_port()}"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Set: UNAVAILABLE: ")


def test_node_client_with_an_api_key(node: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    added = subprocess.run(
        [
            STORD,
            "keys",
            "--file",
            str(keys),
            "add",
            "--namespace",
            "node",
            "--principal",
            "demo",
            "--role",
            "read-write",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    key = added.stdout.strip()
    served = Served(tmp_path / "data", "--api-keys-file", str(keys))
    try:
        demo = [str(node), "stord-demo.js", "--address", served.address, "--events", "1000"]
        result = subprocess.run(
            [*demo, "--api-key", key], cwd=EXAMPLE, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        assert result.stdout.splitlines()[-1] == "ok"
        refused = subprocess.run(demo, cwd=EXAMPLE, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert refused.stderr.startswith("Set: UNAUTHENTICATED: ")
    finally:
        served.stop(signal.SIGKILL)

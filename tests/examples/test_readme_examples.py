"""README examples that run as they stand, against a real daemon."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stord.server.config import Settings
from tests.harness.daemon import DaemonThread

README = Path(__file__).resolve().parents[2] / "README.md"


def python_block_after(heading: str) -> str:
    """Return the first ```python block of the README section under `heading`."""
    text = README.read_text()
    section = text[text.index(f"\n{heading}\n") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, heading
    return match[1]


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonThread]:
    served = DaemonThread(Settings(listen="127.0.0.1:0", database="memory://", log_level="warning")).start()
    yield served
    served.stop()


def run(code: str, daemon: DaemonThread) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "STORD_ADDRESS": daemon.target},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_agents_and_manifests(daemon: DaemonThread) -> None:
    printed = run(python_block_after("### Agents and manifests"), daemon)
    assert printed == [
        "True ops",
        "Triage",
        "['agent://support/triage']",
        "1.1.0",
        "['1.0.0', '1.1.0']",
        "2",
    ]

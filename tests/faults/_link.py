"""A daemon with short link timeouts, for the tests that partition or slow its backends' network."""

from __future__ import annotations

import os
from pathlib import Path

from tests.harness.served import Served

__all__ = ["HOLD", "LINK", "PARTITION", "ROUNDS", "serve_linked"]

ROUNDS = int(os.environ.get("STORD_FAULTS_ROUNDS", "1"))
"""Partitions under load per test; `make soak-faults` runs more."""

HOLD = float(os.environ.get("STORD_FAULTS_HOLD_SECONDS", "0"))
"""Seconds a partition under load is held after the daemon reported it; `make soak-faults` holds longer."""

PARTITION = float(os.environ.get("STORD_FAULTS_PARTITION_SECONDS", "10"))
"""Seconds the ingest and job workers' partition lasts; `make soak-faults` runs it longer."""

LINK = """\
health_check_interval: 0.2
postgres: {connect_timeout: 2, tcp_user_timeout: 1, keepalive_idle: 1, keepalive_interval: 1,
           keepalive_count: 2}
redis: {socket_timeout: 1, socket_connect_timeout: 1, health_check_interval: 1, tcp_user_timeout: 1,
        keepalive_idle: 1, keepalive_interval: 1, keepalive_count: 2}
"""
"""Link timeouts for a test daemon: a silent server is given up on within about a second."""


def serve_linked(tmp_path: Path, *arguments: str) -> Served:
    """Start `stord serve` with the short link timeouts of `LINK`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "stord.yaml"
    config.write_text(LINK)
    return Served(tmp_path / "data", "--config", str(config), *arguments)

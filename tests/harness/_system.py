"""Finding free ports and installing missing server binaries."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

__all__ = ["ensure_installed", "free_port"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def ensure_installed(binary: str, search: list[str], apt_package: str) -> Path:
    """Return the path of `binary`, installing `apt_package` with apt-get when it is nowhere to be found.

    `search` lists glob patterns tried after PATH (for example the versioned PostgreSQL bin folders).
    """
    found = _find(binary, search)
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(f"{binary} is not installed and installing {apt_package} needs root")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Other test runs on the machine may be installing too: wait for apt's lock rather than fail.
    wait_for_lock = ["-o", "DPkg::Lock::Timeout=300"]
    update = ["apt-get", *wait_for_lock, "update", "-q"]
    subprocess.run(update, check=True, env=environment, capture_output=True)
    subprocess.run(
        ["apt-get", *wait_for_lock, "install", "-y", "-q", "--no-install-recommends", apt_package],
        check=True,
        env=environment,
        capture_output=True,
    )
    found = _find(binary, search)
    if found is None:
        raise RuntimeError(f"installed {apt_package} but still cannot find {binary}")
    return found


def _find(binary: str, search: list[str]) -> Path | None:
    for pattern in search:
        matches = sorted(Path("/").glob(pattern.lstrip("/")), reverse=True)
        if matches:
            return matches[0]
    on_path = shutil.which(binary)
    return Path(on_path) if on_path else None

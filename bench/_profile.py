"""Where a daemon's CPU goes, from a py-spy profile folded into a few lines.

py-spy samples every thread of the process without stopping it (`--nonblocking`); each sample's stack is
put in the category of the innermost frame that belongs to one, read from the leaf towards the root:

- driver: the backend and its client library (psycopg, redis-py, hiredis, sqlite3, the memory stores);
- conversion: protobuf messages and stord's request checks and proto <-> domain translation;
- access log: structlog rendering and writing the one `rpc` line per call;
- interceptors: stord's call interceptor, auth, metrics and the call context;
- servicer: the rest of stord's servicers;
- grpc core and event loop: no frame of the above: grpc's Cython and C code (reached from event loop
  callbacks and grpc's own threads), grpc's Python layer and asyncio's scheduling.

Samples of a thread waiting in epoll are left out: they are idle time, not work.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

__all__ = ["CATEGORIES", "ProfileRun", "fold"]

# py-spy names files relative to the import path when it can (`server/interceptors.py`, `redis/client.py`), so
# patterns name a file's last parts, each ending with `/` or `.py:`.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "driver",
        ("psycopg/", "psycopg_pool/", "redis/", "hiredis", "sqlite3/", "server/backends/"),
    ),
    (
        "conversion",
        (
            "google/protobuf/",
            "parse_or_mark",  # the request's deserializer, called by grpc
            "server/rpc/validate.py:",
            "server/documents/fields.py:",
            "server/rpc/message_json.py:",
        ),
    ),
    ("access log", ("structlog/",)),
    (
        "interceptors",
        (
            "server/rpc/interceptors.py:",
            "server/rpc/auth.py:",
            "server/metrics.py:",
            "server/rpc/calls.py:",
            "prometheus_client/",
        ),
    ),
    ("servicer", ("/service.py:", "server/services/", "server/read_cache.py:")),
)
OTHER = "grpc core and event loop"
_IDLE = ("EpollSelector.select", "select (selectors.py")


def _category(frames: list[str]) -> str | None:
    if frames and frames[-1].startswith(_IDLE):
        return None
    for frame in reversed(frames):
        for name, patterns in CATEGORIES:
            if any(pattern in frame for pattern in patterns):
                return name
    return OTHER


def fold(raw: str) -> dict[str, float]:
    """Return each category's share of the busy samples of a py-spy `--format raw` profile, largest first."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        category = _category(stack.split(";")) if number.isdigit() else None
        if category is not None:
            counts[category] += int(number)
    total = sum(counts.values())
    return {name: count / total for name, count in counts.most_common()} if total else {}


class ProfileRun:
    """py-spy recording a process for a while; `result` waits for it and folds what it saw."""

    def __init__(self, pid: int, seconds: float, rate: int = 200, *, subprocesses: bool = False) -> None:
        self.error: str | None = None
        self._directory = tempfile.TemporaryDirectory(prefix="stord-profile-")
        self._output = Path(self._directory.name) / "profile.txt"
        executable = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv/bin/py-spy")
        command = [
            executable, "record", "--pid", str(pid), "--duration", f"{max(1, round(seconds))}",
            "--rate", str(rate), "--format", "raw", "--nonblocking", "--output", str(self._output),
            *(["--subprocesses"] if subprocesses else []),
        ]  # fmt: skip
        try:
            self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except OSError as error:
            self._process = None
            self.error = f"py-spy did not start: {error}"

    def result(self) -> dict[str, float]:
        """Each category's share of the CPU seen, empty (with `error` set) when there is no profile."""
        try:
            if self._process is None:
                return {}
            _, stderr = self._process.communicate(timeout=60)
            if self._process.returncode != 0 or not self._output.exists():
                self.error = f"py-spy failed: {stderr.decode(errors='replace').strip()[-300:]}"
                return {}
            return fold(self._output.read_text())
        finally:
            self._directory.cleanup()


def describe(shares: dict[str, float]) -> str:
    """One line: the categories and their shares."""
    return ", ".join(f"{name} {share:.0%}" for name, share in shares.items())

"""Where a daemon's CPU went while a bench ran: py-spy attached to `stord serve`, folded into a few lines.

`Profile.attach(pid)` runs `py-spy record --format raw --nonblocking` (sampling every thread without pausing
the daemon) until the block ends. A `Breakdown` then puts each sample in the first category, read from the
innermost frame towards the root, that one of its frames belongs to; a sample in none goes to the breakdown's
`other` line. Two breakdowns:

- `UNARY_CATEGORIES` (kv, jobs): driver (the backend and its client library), conversion (protobuf, stord's
  request checks and proto <-> domain translation), access log (structlog), interceptors (the call
  interceptor, auth, metrics, the call context), servicer; "grpc core and event loop" is what has no frame of
  these (grpc's Cython and C code, its Python layer, asyncio's scheduling). Samples of a thread waiting in
  epoll are left out: they are idle time, not work.
- `INGEST_CATEGORIES` (events): hashing, decoding, validation, the ingest algorithm and its SQL, the servicer,
  gRPC core; py-spy counts an event loop in epoll as running, which is the "event loop, waiting" line.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["INGEST_CATEGORIES", "UNARY_CATEGORIES", "Breakdown", "Category", "Profile", "describe"]

SAMPLE_RATE = 200
"""Samples per second: enough for a few seconds' profile, light enough not to slow the daemon measurably."""

Stack = tuple[list[str], int]
"""A py-spy raw line: the frames (`function (file:line)`) from the root to the innermost, and its samples."""


@dataclass(frozen=True)
class Category:
    """A line of the breakdown: the frames matched by `pattern` are its own."""

    name: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class Breakdown:
    """The categories a profile is folded into, in the order they are tried and shown."""

    categories: tuple[Category, ...]
    other: str = "other"
    """The line of a sample no category takes."""
    idle: re.Pattern[str] | None = None
    """A sample whose innermost frame matches is idle time and left out of the shares."""

    def fold(self, stacks: list[Stack]) -> list[tuple[str, float]]:
        """Each category's share of the samples kept, then `other`, in the categories' order."""
        counts: Counter[str] = Counter()
        for frames, count in stacks:
            if self.idle is not None and frames and self.idle.search(frames[-1]):
                continue
            found = next(
                (
                    category.name
                    for frame in reversed(frames)
                    for category in self.categories
                    if category.pattern.search(frame)
                ),
                self.other,
            )
            counts[found] += count
        total = sum(counts.values())
        names = [category.name for category in self.categories] + [self.other]
        return [(name, counts[name] / total if total else 0.0) for name in names]


def _frames(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(patterns))


def _files(*parts: str) -> re.Pattern[str]:
    """Frames of files whose path contains one of `parts` (py-spy names a file relative to the import path
    when it can: `server/rpc/auth.py`, `redis/client.py`), or of functions so named."""
    return re.compile("|".join(re.escape(part) for part in parts))


UNARY_CATEGORIES = Breakdown(
    (
        Category(
            "driver", _files("psycopg/", "psycopg_pool/", "redis/", "hiredis", "sqlite3/", "server/backends/")
        ),
        Category(
            "conversion",
            _files(
                "google/protobuf/",
                "parse_or_mark",  # the request's deserializer, called by grpc
                "server/rpc/validate.py:",
                "server/documents/fields.py:",
                "server/rpc/message_json.py:",
            ),
        ),
        Category("access log", _files("structlog/")),
        Category(
            "interceptors",
            _files(
                "server/rpc/interceptors.py:",
                "server/rpc/auth.py:",
                "server/metrics.py:",
                "server/rpc/calls.py:",
                "prometheus_client/",
            ),
        ),
        Category("servicer", _files("/service.py:", "server/read_cache.py:")),
    ),
    other="grpc core and event loop",
    idle=_frames(r"^EpollSelector\.select", r"^select \(selectors\.py"),
)

INGEST_CATEGORIES = Breakdown(
    (
        Category(
            "canonical JSON, hashing",
            _frames(
                r"^(event_hash|canonical_json|_javascript_\w+|format_timestamp) ",
                r"^(_iso_second|_orjson_writes\w+) ",
            ),
        ),
        Category(
            "decode (messages, payload JSON)", _frames(r"^(struct_json|_json_value) ", r"events/codec\.py")
        ),
        Category("validation", _frames(r"rpc/validate\.py", r"^(_prepare|_event_id|payload_facts) ")),
        Category("ingest algorithm (link, rows)", _frames(r"events/ingest\.py")),
        Category("SQL: insert events", _frames(r"^_IngestTransaction\.insert_events \(.*backends/")),
        Category("SQL: upsert sessions, agents", _frames(r"^_IngestTransaction\.upsert_\w+ \(.*backends/")),
        # psycopg's own frames are in none: a sample in them goes to the stord frame that called psycopg.
        Category(
            "SQL: heads, feed, commit, other",
            _frames(r"backends/\w+/_events\.py", r"sqlite/_engine\.py", r"backends/_event_sql\.py"),
        ),
        Category("interceptors, servicer", _frames(r"server/rpc/interceptors\.py", r"events/service\.py")),
        Category("gRPC core", _frames(r"grpc/")),
        Category("event loop, waiting", _frames(r"^EpollSelector\.select ", r"^Thread\.run ")),
    ),
)


def _read_raw(path: Path) -> list[Stack]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


class Profile:
    """The samples py-spy took of one process; empty (with `problem` set) when py-spy is missing or may not
    attach."""

    def __init__(self) -> None:
        self.stacks: list[Stack] = []
        self.problem: str | None = None

    @classmethod
    @contextlib.contextmanager
    def attach(cls, pid: int, output: Path | None = None) -> Iterator[Profile]:
        """Record `pid` while the block runs, into `output` (flamegraph.pl's input) when given; the samples
        are there once the block ends."""
        profile = cls()
        with contextlib.ExitStack() as cleanup:
            if output is None:
                output = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="stord-profile-")))
                output /= "profile.txt"
            spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            command = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", str(SAMPLE_RATE),
                       "--nonblocking", "-o", str(output)]  # fmt: skip
            try:
                process = subprocess.Popen(
                    command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                )
            except OSError as error:
                profile.problem = f"py-spy did not start: {error}"
                yield profile
                return
            try:
                yield profile
            finally:
                process.send_signal(signal.SIGINT)
                try:
                    _, errors = process.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    _, errors = process.communicate()
                if output.exists():
                    profile.stacks = _read_raw(output)
                else:
                    profile.problem = f"py-spy wrote no profile: {errors.strip().splitlines()[-1:]}"

    def shares(self, breakdown: Breakdown) -> dict[str, float]:
        """Each line's share of the samples kept, largest first, leaving out lines with none."""
        return dict(sorted(((n, s) for n, s in breakdown.fold(self.stacks) if s), key=lambda item: -item[1]))

    def render(self, title: str, breakdown: Breakdown) -> list[str]:
        """Return the breakdown as lines: a title, then one line per category with its share."""
        if not self.stacks:
            return [f"{title}: no profile ({self.problem or 'no samples'})"]
        samples = sum(count for _, count in self.stacks)
        lines = [f"{title} ({samples:,} samples of the daemon's threads, py-spy at {SAMPLE_RATE}/s):"]
        lines += [f"  {share:>6.1%}  {name}" for name, share in breakdown.fold(self.stacks)]
        return lines


def describe(shares: dict[str, float]) -> str:
    """One line: the categories and their shares."""
    return ", ".join(f"{name} {share:.0%}" for name, share in shares.items())

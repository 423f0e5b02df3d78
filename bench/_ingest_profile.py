"""Where a daemon's CPU went during a scenario: py-spy attached to `stord serve`, folded into a few lines.

`Profile.attach(pid)` runs `py-spy record --format raw` (sampling without pausing the daemon) until the block
ends; `fold` sorts every sample into the first category, from the innermost frame outwards, that one of its
frames belongs to. py-spy leaves out threads it sees idle, but counts an event loop in epoll as running: that
is the "event loop, waiting" line.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["INGEST_CATEGORIES", "Category", "Profile", "fold"]

SAMPLE_RATE = 200
"""Samples per second: enough for a few seconds' profile, light enough not to slow the daemon measurably."""


@dataclass(frozen=True)
class Category:
    """A line of the breakdown: the frames (`function (file:line)` matched by `pattern`) it takes."""

    name: str
    pattern: re.Pattern[str]


def _frames(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(patterns))


INGEST_CATEGORIES = (
    Category("canonical JSON, hashing", _frames(
        r"^(event_hash|canonical_json|_javascript_\w+|format_timestamp|_iso_second|_orjson_writes\w+) ")),
    Category("decode (messages, payload JSON)", _frames(r"^(struct_json|_json_value) ", r"events/codec\.py")),
    Category("validation", _frames(r"rpc/validate\.py", r"^(_prepare|_event_id|payload_facts) ")),
    Category("ingest algorithm (link, rows)", _frames(r"events/ingest\.py")),
    Category("SQL: insert events", _frames(r"^_IngestTransaction\.insert_events \(.*backends/")),
    Category("SQL: upsert sessions, agents", _frames(r"^_IngestTransaction\.upsert_\w+ \(.*backends/")),
    # psycopg's own frames are in none: a sample in them goes to the stord frame that called psycopg.
    Category("SQL: heads, feed, commit, other", _frames(r"backends/\w+/_events\.py", r"sqlite/_engine\.py",
                                                        r"backends/_event_sql\.py")),
    Category("interceptors, servicer", _frames(r"server/interceptors\.py", r"events/service\.py")),
    Category("gRPC core", _frames(r"grpc/")),
    Category("event loop, waiting", _frames(r"^EpollSelector\.select ", r"^Thread\.run ")),
)  # fmt: skip


def fold(stacks: Sequence[tuple[list[str], int]], categories: Sequence[Category]) -> list[tuple[str, float]]:
    """Return each category's share of the samples, then "other", in the categories' order."""
    counts: Counter[str] = Counter()
    total = 0
    for frames, count in stacks:
        total += count
        for frame in reversed(frames):
            found = next((category.name for category in categories if category.pattern.search(frame)), None)
            if found is not None:
                counts[found] += count
                break
        else:
            counts["other"] += count
    names = [category.name for category in categories] + ["other"]
    return [(name, counts[name] / total if total else 0.0) for name in names]


def _read_raw(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


class Profile:
    """The samples py-spy took of one process; empty when py-spy is missing or may not attach."""

    def __init__(self) -> None:
        self.stacks: list[tuple[list[str], int]] = []
        self.problem: str | None = None

    @classmethod
    @contextlib.contextmanager
    def attach(cls, pid: int, output: Path) -> Iterator[Profile]:
        """Record `pid` while the block runs into `output` (flamegraph.pl's input); the samples are there
        once it ends."""
        profile = cls()
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        command = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", str(SAMPLE_RATE),
                   "--nonblocking", "-o", str(output)]  # fmt: skip
        try:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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

    def render(self, title: str, categories: Sequence[Category]) -> list[str]:
        """Return the breakdown as lines: a title, then one line per category with its share."""
        if not self.stacks:
            return [f"{title}: no profile ({self.problem or 'no samples'})"]
        samples = sum(count for _, count in self.stacks)
        lines = [f"{title} ({samples:,} samples of the daemon's threads, py-spy at {SAMPLE_RATE}/s):"]
        lines += [f"  {share:>6.1%}  {name}" for name, share in fold(self.stacks, categories)]
        return lines

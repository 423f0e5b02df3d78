"""`make soak`: mixed load on one `stord serve` for a while, watching throughput, errors and its memory.

Run from the repository root (`python -m bench.soak --duration 300`). It starts its own daemon (SQLite in a
temporary directory by default; `--database postgres` starts a throwaway PostgreSQL, or give any URL) and
drives, all at once and for the whole duration:

- kv: Set, Get and MGet on 10,000 keys of the database role, and Set with a TTL on the cache role;
- documents: create, update with the expected revision, a filtered find, delete (the collection stays small);
- jobs: enqueue a batch, dequeue it, acknowledge it (completed jobs are kept, as the daemon keeps them);
- ingest: EventIngestor at a fixed rate (`--events-per-second`), over a rotating set of sessions;
- tail: one TailEvents subscriber on every event, counting what arrives.

Every `--interval` seconds it prints the throughput per kind since the last line, the errors by kind and
status so far and the daemon's resident memory (VmRSS from /proc/<pid>/status). The summary compares the
memory growth over the last half of the run with the first half: memory has levelled off when the last half
grew less than half as much as the first, or by less than a small allowance for allocator noise. Exit status 0
when memory levelled off, no call failed and the daemon is still serving; 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from bench._deploy import BACKENDS, StordDaemon
from stord.client import AsyncClient, EnqueueJob, EventIngestor, IngestProgress, StordError, make_event

__all__ = ["main"]

KINDS = ("kv", "documents", "jobs", "ingest", "tail")
KEYS = 10_000
SESSIONS = 200
"""Ingested events rotate over this many live sessions; each session gets a fresh id after 1,000 events."""
EVENTS_PER_SESSION = 1_000
NOISE_MIB = 4.0
"""Growth over the last half of a run that counts as noise (allocator arenas, a burst of buffers)."""

MIN_DURATION = 180.0
"""Shortest run whose halves say something: SQLite's page caches (64 MB a connection) warm up for ~90 s."""

_MIB = 1024 * 1024


@dataclass
class Tally:
    """What the load did so far: operations by kind and errors by (kind, status); shared by the threads."""

    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self, kind: str, count: int = 1) -> None:
        with self.lock:
            self.ops[kind] += count

    def failed(self, kind: str, error: BaseException) -> None:
        status = error.code.name if isinstance(error, StordError) else type(error).__name__
        with self.lock:
            self.errors[kind, status] += 1

    def snapshot(self) -> tuple[collections.Counter[str], collections.Counter[tuple[str, str]]]:
        with self.lock:
            return collections.Counter(self.ops), collections.Counter(self.errors)


@dataclass(frozen=True)
class Sample:
    """One line of the report: seconds since the load began, the daemon's RSS and the tally then."""

    elapsed: float
    rss_bytes: int
    ops: collections.Counter[str]
    errors: collections.Counter[tuple[str, str]]


def rss_bytes(pid: int) -> int:
    """Return a process's resident set size (VmRSS), 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# The load ---------------------------------------------------------------------------------------------------


async def _repeat(kind: str, tally: Tally, stop: asyncio.Event, step: Callable[[], Awaitable[int]]) -> None:
    """Run `step` until `stop`, counting what it did; an error is counted and the loop goes on."""
    while not stop.is_set():
        try:
            tally.done(kind, await step())
        except StordError as error:
            tally.failed(kind, error)
            await asyncio.sleep(0.1)  # a daemon in trouble is not helped by a tight loop of failures


def _kv_step(client: AsyncClient, rng: random.Random) -> Callable[[], Awaitable[int]]:
    value = bytes(200)

    async def step() -> int:
        key = f"soak:{rng.randrange(KEYS)}"
        await client.db.set(key, value)
        await client.db.get(key)
        await client.db.get_many([f"soak:{rng.randrange(KEYS)}" for _ in range(20)])
        await client.cache.set(key, value, ttl=30)
        return 4

    return step


def _documents_step(client: AsyncClient, rng: random.Random) -> Callable[[], Awaitable[int]]:
    async def step() -> int:
        owner = f"owner-{rng.randrange(50)}"
        document = await client.documents.create("soak", {"owner": owner, "status": "new", "cost": 1})
        updated = await client.documents.update(
            "soak", document.id, {"status": "done"}, expected_revision=document.revision
        )
        await client.documents.find("soak", where=[("owner", "eq", owner)], limit=10)
        await client.documents.delete("soak", document.id, expected_revision=updated.revision)
        return 4

    return step


def _jobs_step(client: AsyncClient, queue: str) -> Callable[[], Awaitable[int]]:
    async def step() -> int:
        await client.jobs.enqueue_many([EnqueueJob(queue, {"index": index}) for index in range(20)])
        jobs = await client.jobs.dequeue(queue, max_jobs=20, lease=30, wait=1)
        if jobs:
            await client.jobs.acknowledge(jobs)
        return len(jobs)

    return step


async def _tail(client: AsyncClient, tally: Tally, stop: asyncio.Event) -> None:
    """Count every event the daemon streams; subscribe again after a dropped stream."""
    while not stop.is_set():
        try:
            async with await client.events.tail() as tail:
                async for events in tail:
                    tally.done("tail", len(events))
                    if stop.is_set():
                        return
        except StordError as error:
            tally.failed("tail", error)
            await asyncio.sleep(0.5)


def _ingest(address: str, rate: float, tally: Tally, stop: threading.Event) -> None:
    """Add events at `rate` per second from this thread; count them as the daemon acknowledges them."""
    acknowledged = 0

    def counted(progress: IngestProgress) -> None:
        nonlocal acknowledged
        tally.done("ingest", progress.acknowledged - acknowledged)
        acknowledged = progress.acknowledged

    sessions = [f"soak-{index}" for index in range(SESSIONS)]
    started = time.monotonic()
    try:
        with EventIngestor(
            address, namespace="soak", batch_size=200, max_in_flight=4, on_progress=counted
        ) as ingestor:
            for index in itertools.count():
                if stop.is_set():
                    break
                slot = index % SESSIONS
                if index and index % (SESSIONS * EVENTS_PER_SESSION) == 0:
                    sessions = [f"soak-{index}-{slot}" for slot in range(SESSIONS)]  # retire the old ones
                ingestor.add(
                    make_event(sessions[slot], f"agent-{slot % 20}", "tool_call", payload={"i": index})
                )
                ahead = started + (index + 1) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    except StordError as error:
        tally.failed("ingest", error)


async def _load(address: str, arguments: argparse.Namespace, tally: Tally, stop: asyncio.Event) -> None:
    rng = random.Random(7)
    async with AsyncClient(address, namespace="soak", timeout=10) as client:
        tasks = [asyncio.create_task(_tail(client, tally, stop))]
        tasks += [
            asyncio.create_task(_repeat("kv", tally, stop, _kv_step(client, rng)))
            for _ in range(arguments.concurrency)
        ]
        tasks += [
            asyncio.create_task(_repeat("documents", tally, stop, _documents_step(client, rng)))
            for _ in range(max(1, arguments.concurrency // 2))
        ]
        tasks += [
            asyncio.create_task(_repeat("jobs", tally, stop, _jobs_step(client, f"soak-{index}")))
            for index in range(max(1, arguments.concurrency // 2))
        ]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# The report -------------------------------------------------------------------------------------------------


def _line(previous: Sample, current: Sample) -> str:
    seconds = max(current.elapsed - previous.elapsed, 1e-9)
    rates = "  ".join(f"{kind} {(current.ops[kind] - previous.ops[kind]) / seconds:,.0f}/s" for kind in KINDS)
    errors = ", ".join(f"{kind} {status} {count}" for (kind, status), count in sorted(current.errors.items()))
    return (
        f"t={current.elapsed:5.0f}s  {rates}  errors: {errors or 'none'}"
        f"  rss {current.rss_bytes / _MIB:,.1f} MiB"
    )


@dataclass(frozen=True)
class Verdict:
    """Memory growth of the two halves of a run (MiB), and whether it levelled off."""

    start: float
    first_half_peak: float
    last_half_peak: float

    @property
    def first_growth(self) -> float:
        return self.first_half_peak - self.start

    @property
    def last_growth(self) -> float:
        return self.last_half_peak - self.first_half_peak

    @property
    def levelled(self) -> bool:
        return self.last_growth <= max(self.first_growth / 2, NOISE_MIB)

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Verdict:
        """Judge by peaks: the largest RSS of each half, so one sample's dip or spike does not decide."""
        middle = samples[-1].elapsed / 2
        first = [sample.rss_bytes for sample in samples if sample.elapsed <= middle]
        last = [sample.rss_bytes for sample in samples if sample.elapsed > middle] or first
        return cls(samples[0].rss_bytes / _MIB, max(first) / _MIB, max(last) / _MIB)


def _summary(samples: Sequence[Sample], verdict: Verdict, alive: bool) -> list[str]:
    last = samples[-1]
    seconds = max(last.elapsed, 1e-9)
    rates = ", ".join(f"{kind} {last.ops[kind]:,} ({last.ops[kind] / seconds:,.0f}/s)" for kind in KINDS)
    errors = ", ".join(f"{kind} {status}: {count}" for (kind, status), count in sorted(last.errors.items()))
    judgement = (
        "levelled off"
        if verdict.levelled
        else f"DID NOT level off (the last half grew over half the first half's growth and {NOISE_MIB:g} MiB)"
    )
    return [
        "",
        f"Summary after {last.elapsed:,.0f} s:",
        f"  operations (kv and documents count RPCs, jobs and events count items): {rates}",
        f"  errors: {errors or 'none'}",
        f"  daemon RSS: {verdict.start:,.1f} MiB at the start, peak {verdict.first_half_peak:,.1f} MiB in the"
        f" first half, {verdict.last_half_peak:,.1f} MiB in the last half",
        f"  growth: first half {verdict.first_growth:+,.1f} MiB, last half {verdict.last_growth:+,.1f} MiB:"
        f" memory {judgement}",
        f"  daemon: {'still serving' if alive else 'EXITED'}",
    ]


# Running it -------------------------------------------------------------------------------------------------


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=300.0,
        help=f"seconds of load (default 300, at least {MIN_DURATION:g})",
    )
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between lines (default 10)")
    parser.add_argument(
        "--database",
        default="sqlite",
        help="sqlite (default) or postgres for a throwaway server, or a database URL",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="kv callers; documents and jobs get half as many (default 4)",
    )
    parser.add_argument("--events-per-second", type=float, default=1000.0, help="ingest rate (default 1000)")
    arguments = parser.parse_args(argv)
    if arguments.interval <= 0 or arguments.events_per_second <= 0:
        parser.error("--interval and --events-per-second must be positive")
    if arguments.duration < MIN_DURATION:
        parser.error(
            f"--duration must be at least {MIN_DURATION:g} s: the daemon's SQLite page caches fill for the"
            " first minute or two, and a shorter run would judge that warm-up as a leak"
        )
    return arguments


def _deploy(database: str, workdir: Path, stack: ExitStack) -> tuple[str, str]:
    """Return the database URL and the backend kind the daemon must report."""
    if database in BACKENDS:
        return BACKENDS[database].deploy(workdir, stack).stord_url, BACKENDS[database].kind
    scheme = database.partition(":")[0]
    return database, "postgres" if scheme.startswith("postgres") else scheme


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStack, so the daemon and servers stop


def _soak(daemon: StordDaemon, arguments: argparse.Namespace) -> tuple[list[Sample], bool]:
    tally = Tally()
    samples = [Sample(0.0, rss_bytes(daemon.pid), collections.Counter(), collections.Counter())]
    ingest_stop = threading.Event()
    ingest = threading.Thread(
        target=_ingest, args=(daemon.address, arguments.events_per_second, tally, ingest_stop), daemon=True
    )

    async def drive() -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(_load(daemon.address, arguments, tally, stop))
        started = time.monotonic()
        ingest.start()
        try:
            for tick in itertools.count(1):
                wake = started + min(tick * arguments.interval, arguments.duration)
                await asyncio.sleep(max(wake - time.monotonic(), 0))
                ops, errors = tally.snapshot()
                sample = Sample(time.monotonic() - started, rss_bytes(daemon.pid), ops, errors)
                print(_line(samples[-1], sample), flush=True)
                samples.append(sample)
                if sample.elapsed >= arguments.duration or sample.rss_bytes == 0:
                    break
        finally:
            stop.set()
            ingest_stop.set()
            await load

    asyncio.run(drive())
    ingest.join(30)
    return samples, samples[-1].rss_bytes > 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _arguments(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stord-soak-")))
        url, kind = _deploy(arguments.database, workdir, stack)
        daemon = stack.enter_context(StordDaemon.serving(url, kind, workdir))
        print(
            f"soak: {arguments.duration:g} s of mixed load on {kind}, daemon pid {daemon.pid} at"
            f" {daemon.address}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        samples, alive = _soak(daemon, arguments)
        verdict = Verdict.of(samples)
        print("\n".join(_summary(samples, verdict, alive)), flush=True)
        if not alive:
            print(daemon.log_excerpt(), flush=True)
    clean = alive and verdict.levelled and not samples[-1].errors
    return 0 if clean else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)

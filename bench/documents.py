"""`make bench`: document Create, Get and List-with-filter on 100,000 documents, without and with CreateIndex.

Run from the repository root (`python -m bench.documents`). Per database (SQLite, PostgreSQL): a `stord serve`
subprocess on it is seeded with 100,000 documents through Transact, then each operation is measured; then
CreateIndex indexes the filtered field and every operation is measured again, so the table shows what the
index buys a filter and costs a write. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench._deploy import BACKENDS, StordDaemon
from bench._load import Percentiles, closed_loop, run
from stord.client import AsyncClient, CreateDocument

__all__ = ["main"]

DOCUMENTS = 100_000
CATEGORIES = 1000
"""A filter on one category matches 100 documents of the 100,000."""
COLLECTION = "bench"
NAMESPACE = "bench"
SEED_BATCH = 1000
SEED_CONCURRENCY = 2
CONCURRENCY = 16
PAGE_SIZE = 20
OPS = ("create", "get", "list")

Call = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Settings:
    duration: float = 1.5
    warmup: float = 0.3


@dataclass(frozen=True)
class Figure:
    """Closed-loop throughput at CONCURRENCY callers, and the latency of one caller alone."""

    ops: float
    latency: Percentiles


@dataclass(frozen=True)
class Measured:
    """One backend's figures per operation, without and with the index, and the seeding and indexing times."""

    seed_rate: float
    index_seconds: float
    without: dict[str, Figure]
    with_index: dict[str, Figure]


@dataclass(frozen=True)
class Row:
    backend: str
    measured: Measured | None = None
    error: str | None = None


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _data(number: int) -> dict[str, Any]:
    return {
        "category": f"c{number % CATEGORIES:04d}",
        "n": number,
        "title": f"document {number}",
        "owner": {"name": f"user {number % 97}", "team": number % 7},
        "tags": ["bench", f"t{number % 13}"],
    }


async def _seed(client: AsyncClient) -> float:
    """Create DOCUMENTS documents in transactions of SEED_BATCH; return documents per second."""
    batches = iter(range(0, DOCUMENTS, SEED_BATCH))
    started = time.monotonic()

    async def writer() -> None:
        for first in batches:
            steps = [
                CreateDocument(COLLECTION, _data(n), id=f"d{n:06d}") for n in range(first, first + SEED_BATCH)
            ]
            await client.documents.transact(steps)

    await asyncio.gather(*(writer() for _ in range(SEED_CONCURRENCY)))
    return DOCUMENTS / (time.monotonic() - started)


def _calls(client: AsyncClient, phase: str) -> dict[str, Call]:
    numbers = itertools.count()
    chance = random.Random(7)

    async def create() -> object:
        return await client.documents.create(
            COLLECTION, _data(chance.randrange(DOCUMENTS)), id=f"{phase}-{next(numbers)}"
        )

    async def get() -> object:
        return await client.documents.get(COLLECTION, f"d{chance.randrange(DOCUMENTS):06d}")

    async def find() -> object:
        category = f"c{chance.randrange(CATEGORIES):04d}"
        found = await client.documents.find(COLLECTION, where=[("category", "eq", category)], limit=PAGE_SIZE)
        assert len(found) == PAGE_SIZE, found
        return found

    return {"create": create, "get": get, "list": find}


async def _measure(call: Call, settings: Settings) -> Figure:
    start = time.monotonic() + settings.warmup
    completed = await closed_loop(call, CONCURRENCY, start_at=start, end_at=start + settings.duration)
    timings: list[float] = []
    end = time.monotonic() + settings.duration / 2
    while time.monotonic() < end or len(timings) < 3:
        began = time.perf_counter()
        await call()
        timings.append(time.perf_counter() - began)
    return Figure(completed / settings.duration, Percentiles.of(timings))


async def _bench(address: str, name: str, settings: Settings) -> Measured:
    async with AsyncClient(address, namespace=NAMESPACE, timeout=300) as client:
        _progress(f"{name}: seeding {DOCUMENTS:,} documents")
        seed_rate = await _seed(client)
        _progress(f"{name}: measuring without an index")
        calls = _calls(client, "before")
        without = {op: await _measure(calls[op], settings) for op in OPS}
        started = time.monotonic()
        await client.documents.create_index(COLLECTION, "category")
        index_seconds = time.monotonic() - started
        _progress(f"{name}: measuring with the index")
        calls = _calls(client, "after")
        with_index = {op: await _measure(calls[op], settings) for op in OPS}
    return Measured(seed_rate, index_seconds, without, with_index)


def _bench_backend(name: str, workdir: Path, settings: Settings) -> Row:
    backend = BACKENDS[name]
    workdir.mkdir(parents=True)
    with ExitStack() as stack:
        try:
            deployment = backend.deploy(workdir, stack)
            daemon = stack.enter_context(StordDaemon.serving(deployment.stord_url, backend.kind, workdir))
            return Row(name, run(_bench(daemon.address, name, settings)))
        except Exception as error:
            return Row(name, error=repr(error))


def _figure(figure: Figure) -> list[str]:
    return [f"{figure.ops:,.0f}", f"{figure.latency.p50:.2f} / {figure.latency.p99:.2f}"]


def render(rows: Sequence[Row], settings: Settings) -> str:
    header = ["backend", "op", "no index ops/s", "no index p50/p99 ms", "indexed ops/s", "indexed p50/p99 ms"]
    lines = [header]
    notes: list[str] = []
    for row in rows:
        if row.measured is None:
            lines.append([row.backend, f"FAILED: {row.error}"])
            continue
        measured = row.measured
        for op in OPS:
            lines.append([row.backend, op, *_figure(measured.without[op]), *_figure(measured.with_index[op])])
        notes.append(
            f"{row.backend}: seeded at {measured.seed_rate:,.0f} documents/s; CreateIndex took"
            f" {measured.index_seconds:.2f} s."
        )
    widths = [max(len(line[column]) for line in lines if column < len(line)) for column in range(len(header))]
    text = [
        " | ".join(cell.ljust(widths[column]) for column, cell in enumerate(line)).rstrip() for line in lines
    ]
    text.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(
        [
            *text,
            "",
            *notes,
            f"{DOCUMENTS:,} documents of about 150 bytes in one collection, seeded by Transact in batches of"
            f" {SEED_BATCH:,}. create: CreateDocument of a new document; get: GetDocument of a random one;"
            f" list: ListDocuments with `category eq <one of {CATEGORIES:,}>` (100 matches), first page of"
            f" {PAGE_SIZE}. indexed: after CreateIndex(collection, 'category'). ops/s: closed loop,"
            f" {CONCURRENCY} AsyncClient callers in one process, for {settings.duration:g} s after"
            f" {settings.warmup:g} s of warm-up; p50/p99: one caller alone. `stord serve` with the info"
            f" access log to a file. Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
            " at the end.",
        ]
    )


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.documents", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=1.5, help="seconds measured per figure (default 1.5)"
    )
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds every ExitStack, so servers and daemons stop


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _arguments(argv)
    settings = Settings(duration=arguments.duration)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="stord-bench-documents-") as workdir:
        rows = [
            _bench_backend(name, Path(workdir) / name, settings) for name in arguments.backends.split(",")
        ]
    print(render(rows, settings))
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

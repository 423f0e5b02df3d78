"""`make bench`: jobs/s end to end through stord (batched enqueue, dequeue, acknowledge) beside raw SQL.

Run from the repository root (`python -m bench.jobs`). Per database (SQLite, PostgreSQL): a `stord serve`
subprocess on it, where producers enqueue the jobs in batches while consumers dequeue them in batches and
acknowledge each batch, all through AsyncClient; then the same queue operations in SQL on a database of the
same schema, in the same run. A figure is the number of jobs divided by the time from the first enqueue to
the last acknowledgement. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from bench._deploy import BACKENDS, StordDaemon, create_schema
from bench._load import run
from bench._profile import UNARY_CATEGORIES, Profile, describe
from bench._scenarios import client_processes
from stord.client import AsyncClient, EnqueueJob

__all__ = ["main"]

NAMESPACE = "bench"
PRODUCERS = 2
CONSUMERS = 4
"""Per client process: tasks enqueueing batches, and tasks dequeueing batches and acknowledging them."""
LEASE = 60.0
LEASE_MICROS = 60_000_000
POLL = 0.05
"""Seconds a consumer's dequeue waits for jobs when the queue is empty."""
PROCESS_COUNTS = (1, 2)
"""stord is measured with its clients in one process and in two; the better figure is shown."""
_CONNECT_DELAY = 1.0
"""Seconds for the client processes to receive their share and connect before the shared start."""


@dataclass(frozen=True)
class Settings:
    jobs: int = 20_000
    batch: int = 100


@dataclass(frozen=True)
class Row:
    backend: str
    stord: float | None = None
    stord_processes: int | None = None
    raw: float | None = None
    workers2: float | None = None
    """The same through `stord serve --workers 2` on the same database."""
    profile: str | None = None
    """Where the daemon's CPU went during the one-client-process run."""
    error: str | None = None


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _payload(number: int) -> dict[str, Any]:
    return {"n": number, "task": "send-report", "to": f"user-{number % 997}@example.com"}


def _batches(first: int, count: int, size: int) -> list[range]:
    return [range(start, min(start + size, first + count)) for start in range(first, first + count, size)]


# The stord side --------------------------------------------------------------------------------------------


async def _stord_share(
    address: str, queue: str, share: range, total: int, batch: int, start_at: float
) -> float:
    """Enqueue this process's share of the jobs and consume until the queue has all `total` completed."""
    async with AsyncClient(address, namespace=NAMESPACE, timeout=60) as client:
        await client.jobs.stats(queue)  # connected before the start
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        pending = _batches(share.start, len(share), batch)

        async def produce() -> None:
            while pending:
                numbers = pending.pop()
                await client.jobs.enqueue_many([EnqueueJob(queue, _payload(n)) for n in numbers])

        async def consume() -> None:
            while True:
                jobs = await client.jobs.dequeue(queue, max_jobs=batch, lease=LEASE, wait=POLL)
                if jobs:
                    await client.jobs.acknowledge(jobs)
                elif not pending and (await client.jobs.stats(queue)).completed >= total:
                    return

        await asyncio.gather(*(produce() for _ in range(PRODUCERS)), *(consume() for _ in range(CONSUMERS)))
        return time.monotonic()


def _stord_share_in_process(
    address: str, queue: str, share: range, total: int, batch: int, start_at: float
) -> float:
    return run(_stord_share(address, queue, share, total, batch, start_at))


def _stord_rate(pool: ProcessPoolExecutor, address: str, processes: int, settings: Settings) -> float:
    """Jobs/s through stord with the clients spread over `processes`, on a queue of its own."""
    queue = f"stord-{processes}p"
    start_at = time.monotonic() + _CONNECT_DELAY
    size = settings.jobs // processes
    ends = [
        pool.submit(
            _stord_share_in_process,
            address,
            queue,
            range(index * size, (index + 1) * size),
            size * processes,
            settings.batch,
            start_at,
        )
        for index in range(processes)
    ]
    return size * processes / (max(end.result() for end in ends) - start_at)


# The raw side: the same queue operations in SQL ------------------------------------------------------------

_SQLITE_INSERT = """
INSERT INTO jobs (namespace, id, queue, status, priority, run_at, attempts, max_attempts, payload,
                  create_time, update_time)
VALUES (?, ?, ?, 'pending', 0, ?, 0, 3, ?, ?, ?)
"""
_SQLITE_LEASE = """
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_token = ?, lease_expires_at = ?,
                update_time = ?
WHERE sequence IN (
    SELECT sequence FROM jobs
    WHERE namespace = ? AND queue = ? AND status IN ('pending', 'retrying') AND run_at <= ?
    ORDER BY priority DESC, run_at, sequence
    LIMIT ?
)
RETURNING id, lease_token, payload
"""
_SQLITE_COMPLETE = """
UPDATE jobs SET status = 'completed', lease_token = NULL, lease_expires_at = NULL, update_time = ?
WHERE namespace = ? AND id = ? AND status = 'running' AND lease_token = ? AND lease_expires_at > ?
"""


def _sqlite_rate(url: str, settings: Settings) -> float:
    """sqlite3 on one connection (WAL, synchronous=NORMAL): per batch, one transaction for each operation."""
    connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    queue = "raw"
    started = time.monotonic()
    try:
        for numbers in _batches(0, settings.jobs, settings.batch):
            now = time.time_ns() // 1000  # instants are integer microseconds (migrations/*/0008)
            rows = [
                (NAMESPACE, str(uuid.uuid4()), queue, now, orjson.dumps(_payload(n)).decode(), now, now)
                for n in numbers
            ]
            with connection:
                connection.executemany(_SQLITE_INSERT, rows)
            token = uuid.uuid4().hex
            with connection:
                leased = connection.execute(
                    _SQLITE_LEASE, (token, now + LEASE_MICROS, now, NAMESPACE, queue, now, settings.batch)
                ).fetchall()
            jobs = [(job_id, lease, orjson.loads(payload)) for job_id, lease, payload in leased]
            with connection:
                connection.executemany(
                    _SQLITE_COMPLETE, [(now, NAMESPACE, job_id, lease, now) for job_id, lease, _ in jobs]
                )
    finally:
        connection.close()
    return settings.jobs / (time.monotonic() - started)


_POSTGRES_INSERT = """
INSERT INTO jobs (namespace, id, queue, status, priority, run_at, attempts, max_attempts, payload,
                  create_time, update_time)
SELECT %(namespace)s, job.id, %(queue)s, 'pending', 0, %(now)s, 0, 3, job.payload, %(now)s, %(now)s
FROM unnest(%(ids)b::text[], %(payloads)b::jsonb[]) WITH ORDINALITY AS job(id, payload, position)
ORDER BY job.position
"""
_POSTGRES_LEASE = """
WITH picked AS (
    SELECT sequence FROM jobs
    WHERE namespace = %(namespace)s AND queue = %(queue)s AND status IN ('pending', 'retrying')
      AND run_at <= %(now)s
    ORDER BY priority DESC, run_at, sequence
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_token = %(token)s,
                lease_expires_at = %(expires_at)s, update_time = %(now)s
FROM picked WHERE jobs.sequence = picked.sequence
RETURNING jobs.id, jobs.lease_token, jobs.payload::text
"""
_POSTGRES_COMPLETE = """
UPDATE jobs SET status = 'completed', lease_token = NULL, lease_expires_at = NULL, update_time = %(now)s
FROM unnest(%(ids)b::text[], %(tokens)b::text[]) AS lease(id, token)
WHERE jobs.namespace = %(namespace)s AND jobs.id = lease.id AND jobs.status = 'running'
  AND jobs.lease_token = lease.token AND jobs.lease_expires_at > %(now)s
"""


async def _postgres_rate(url: str, settings: Settings) -> float:
    """psycopg, one pooled autocommit connection per task: the producers and consumers stord's clients run."""
    tasks = PRODUCERS + CONSUMERS
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=tasks, max_size=tasks, kwargs={"autocommit": True}, open=False
    )
    await pool.open(wait=True)
    queue = "raw"
    pending = _batches(0, settings.jobs, settings.batch)
    completed = 0

    async def produce() -> None:
        while pending:
            numbers = pending.pop()
            parameters = {
                "namespace": NAMESPACE,
                "queue": queue,
                "now": time.time_ns() // 1000,
                "ids": [str(uuid.uuid4()) for _ in numbers],
                "payloads": [orjson.dumps(_payload(n)).decode() for n in numbers],
            }
            async with pool.connection() as connection:
                await connection.execute(_POSTGRES_INSERT, parameters)

    async def consume() -> None:
        nonlocal completed
        while completed < settings.jobs:
            now = time.time_ns() // 1000
            parameters = {
                "namespace": NAMESPACE,
                "queue": queue,
                "now": now,
                "limit": settings.batch,
                "token": uuid.uuid4().hex,
                "expires_at": now + LEASE_MICROS,
            }
            async with pool.connection() as connection:
                rows = await (await connection.execute(_POSTGRES_LEASE, parameters)).fetchall()
                if not rows:
                    await asyncio.sleep(POLL)
                    continue
                jobs = [(job_id, token, orjson.loads(payload)) for job_id, token, payload in rows]
                leases = {
                    "namespace": NAMESPACE,
                    "now": time.time_ns() // 1000,
                    "ids": [job_id for job_id, _, _ in jobs],
                    "tokens": [token for _, token, _ in jobs],
                }
                await connection.execute(_POSTGRES_COMPLETE, leases)
            completed += len(jobs)

    try:
        started = time.monotonic()
        await asyncio.gather(*(produce() for _ in range(PRODUCERS)), *(consume() for _ in range(CONSUMERS)))
        return settings.jobs / (time.monotonic() - started)
    finally:
        await pool.close()


# Running and reporting -------------------------------------------------------------------------------------


def _bench_backend(name: str, workdir: Path, pool: ProcessPoolExecutor, settings: Settings) -> Row:
    backend = BACKENDS[name]
    workdir.mkdir(parents=True)
    with ExitStack() as stack:
        try:
            deployment = backend.deploy(workdir, stack)
            assert deployment.raw_url is not None
            create_schema(deployment.raw_url)
            daemon = stack.enter_context(StordDaemon.serving(deployment.stord_url, backend.kind, workdir))
            rates: list[tuple[float, int]] = []
            profile = ""
            for processes in PROCESS_COUNTS:
                _progress(f"{name}: stord, clients in {processes} process(es)")
                if processes == 1:
                    with Profile.attach(daemon.pid) as run_profile:
                        rates.append((_stord_rate(pool, daemon.address, processes, settings), processes))
                    profile = describe(run_profile.shares(UNARY_CATEGORIES)) or (run_profile.problem or "")
                else:
                    rates.append((_stord_rate(pool, daemon.address, processes, settings), processes))
            daemon.stop()
            _progress(f"{name}: stord --workers 2")
            workers = stack.enter_context(
                StordDaemon.serving(deployment.stord_url, backend.kind, workdir, ["--workers", "2"])
            )
            workers2 = max(
                _stord_rate(pool, workers.address, processes, settings) for processes in PROCESS_COUNTS
            )
            workers.stop()
            _progress(f"{name}: raw SQL")
            if name == "sqlite":
                raw = _sqlite_rate(deployment.raw_url, settings)
            else:
                raw = run(_postgres_rate(deployment.raw_url, settings))
        except Exception as error:
            return Row(name, error=repr(error))
    best, processes = max(rates)
    return Row(name, best, processes, raw, workers2, profile)


def render(rows: Sequence[Row], settings: Settings) -> str:
    header = ["backend", "stord jobs/s", "raw SQL jobs/s", "ratio", "--workers 2 jobs/s"]
    lines = [header]
    for row in rows:
        if row.error is not None:
            lines.append([row.backend, f"FAILED: {row.error}"])
            continue
        assert row.stord is not None
        assert row.raw is not None
        lines.append(
            [
                row.backend,
                f"{row.stord:,.0f} ({row.stord_processes}p)",
                f"{row.raw:,.0f}",
                f"{row.stord / row.raw:.2f}",
                "-" if row.workers2 is None else f"{row.workers2:,.0f}",
            ]
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
            f"{settings.jobs:,} jobs, payloads of about 70 bytes, batches of {settings.batch}: jobs/s from"
            " the first enqueue to the last acknowledgement. stord: `stord serve` (info access log to a file)"
            f" on the database; per client process {PRODUCERS} AsyncClient tasks enqueue batches while"
            f" {CONSUMERS} dequeue batches (long poll {POLL:g} s) and acknowledge each; (Np) is the better of"
            " 1 and 2 client processes. raw: the core of the same queue operations in SQL on a database of"
            " the same schema (insert, lease in hand-out order, complete if the lease is held; without"
            " stord's recovery of expired leases, dedupe keys and notifications); SQLite: sqlite3 on one"
            " connection, enqueue, dequeue and acknowledge of each batch in a transaction each; PostgreSQL:"
            " psycopg with the same producer and consumer tasks, the dequeue with FOR UPDATE SKIP LOCKED.",
            "--workers 2: the same through `stord serve --workers 2` on the same database, right after.",
            f"Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end.",
            "",
            "Where the daemon's CPU went (py-spy, over the one-client-process run):",
            *(f"  {row.backend}: {row.profile}" for row in rows if row.profile),
        ]
    )


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per figure (default 20,000)")
    parser.add_argument("--batch", type=int, default=100, help="jobs per batch (default 100)")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds every ExitStack, so servers and daemons stop


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _arguments(argv)
    settings = Settings(jobs=arguments.jobs, batch=arguments.batch)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stord-bench-jobs-")))
        pool = stack.enter_context(client_processes(max(PROCESS_COUNTS)))
        rows = [
            _bench_backend(name, workdir / name, pool, settings) for name in arguments.backends.split(",")
        ]
    print(render(rows, settings))
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

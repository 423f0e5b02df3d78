"""`make bench`: GetAgent and SearchAgents over 10,000 agents, with and without the read cache, beside SQL.

Run from the repository root (`python -m bench.agents`). Per database (SQLite, PostgreSQL): two `stord serve`
subprocesses on it, one with the read cache on a throwaway Redis and one with the default memory cache, which
does not read through (a process-local cache cannot be invalidated by other daemons); 10,000 agents seeded
through the API; then each query on both daemons and on the database directly. Progress goes to stderr, the
table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from bench._deploy import STORD, DaemonError, create_schema
from bench._load import Percentiles, closed_loop, run
from stord.client import AsyncClient, Client, StordError
from stord.server.backends import tables
from tests.harness._system import free_port
from tests.harness.postgres import start_postgres
from tests.harness.redis import start_redis

__all__ = ["main"]

AGENTS = 10_000
HOT_AGENTS = 100
"""Get reads these agents over and over: the hot set a read cache is for."""
RARE_WORD = "rosetta"
"""In the configuration of one agent in 1,000, so a search scans all 10,000 to find 10."""
NAMESPACE = "bench"
CONCURRENCY = 16
SEED_CONCURRENCY = 32
OPS = ("get", "search")

_START_TIMEOUT = 30.0

Call = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Settings:
    duration: float = 2.0
    warmup: float = 0.5


@dataclass(frozen=True)
class Figure:
    """Closed-loop throughput at CONCURRENCY callers, and the latency of one caller alone."""

    ops: float
    latency: Percentiles


@dataclass(frozen=True)
class Row:
    backend: str
    op: str
    cached: Figure | None = None
    uncached: Figure | None = None
    raw: Figure | None = None
    error: str | None = None


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _uri(index: int) -> str:
    return f"agent://bench/{index:05d}"


def _hot_uris() -> Iterator[str]:
    """The uris Get reads, spread over the whole set, in turn forever."""
    return itertools.cycle([_uri(index * (AGENTS // HOT_AGENTS)) for index in range(HOT_AGENTS)])


def _configuration(index: int) -> dict[str, Any]:
    extra = f" Speaks {RARE_WORD.title()}." if index % 1000 == 7 else ""
    return {
        "model": ("gpt-4o", "claude", "llama", "mistral")[index % 4],
        "prompt": f"You are helper number {index}.{extra}",
        "tools": ["search", "calculator"][: index % 3],
    }


# The stord side --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stord(database: str, cache: str, workdir: Path, name: str) -> Iterator[str]:
    """Run `stord serve` on a database and a cache until the block ends; yield its address."""
    address = f"127.0.0.1:{free_port()}"
    log_path = workdir / f"stord-{name}.log"
    command = [
        STORD, "serve",
        "--listen", address,
        "--data-dir", str(workdir / "data"),
        "--database", database,
        "--cache", cache,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_serving(process, address, log_path)
        yield address
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_serving(process: subprocess.Popen[bytes], address: str, log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DaemonError(f"stord exited: {log_path.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(StordError), Client(address, timeout=1) as client:
            backends = client.get_info().backends
            if any(info.fallback or not info.healthy for info in backends):
                raise DaemonError(f"stord serves degraded: {backends}")  # the wrong thing to measure
            return
        time.sleep(0.1)
    raise DaemonError(f"stord did not answer within {_START_TIMEOUT:.0f} s")


async def _seed(address: str) -> None:
    async with AsyncClient(address, namespace=NAMESPACE, timeout=30) as client:
        indexes = iter(range(AGENTS))

        async def writer() -> None:
            for index in indexes:
                await client.agents.set(
                    _uri(index), name=f"Agent {index}", configuration=_configuration(index)
                )

        await asyncio.gather(*(writer() for _ in range(SEED_CONCURRENCY)))
        found = [agent.uri async for agent in client.agents.search(RARE_WORD)]
        assert len(found) == AGENTS // 1000, found


def _stord_calls(client: AsyncClient) -> dict[str, Call]:
    hot = _hot_uris()

    async def get() -> object:
        return await client.agents.get(next(hot))

    async def search() -> object:
        return [agent async for agent in client.agents.search(RARE_WORD)]

    return {"get": get, "search": search}


# The raw side: the same queries on the same rows -----------------------------------------------------------

# What the daemon reads of an agent (tables.AGENTS): every column but the namespace, the order and the folds.
_AGENT = tables.AGENTS.names(skip=("namespace", "position", "name_folded", "configuration_folded"))

_SQLITE_GET = f"""
SELECT {_AGENT} FROM agents
WHERE namespace = ? AND uri = ?
"""
_SQLITE_SEARCH = f"""
SELECT {_AGENT} FROM agents
WHERE namespace = ? AND (visibility = 'public' OR owner = '')
  AND (uri = ? OR instr(name_folded, ?) > 0 OR instr(configuration_folded, ?) > 0)
ORDER BY position LIMIT 101
"""
_POSTGRES_GET = f"""
SELECT {_AGENT} FROM agents
WHERE namespace = %s AND uri = %s
"""
_POSTGRES_SEARCH = f"""
SELECT {_AGENT} FROM agents
WHERE namespace = %s AND (visibility = 'public' OR owner = '')
  AND (uri = %s OR strpos(name_folded, %s) > 0 OR strpos(configuration_folded, %s) > 0)
ORDER BY position LIMIT 101
"""


def _sqlite_calls(path: str) -> tuple[dict[str, Call], Callable[[], Awaitable[None]]]:
    """sqlite3 on one connection in the event loop's thread, as an embedded application would."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA query_only = ON")
    hot = _hot_uris()

    async def get() -> object:
        row = connection.execute(_SQLITE_GET, (NAMESPACE, next(hot))).fetchone()
        return json.loads(row[6])

    async def search() -> object:
        rows = connection.execute(_SQLITE_SEARCH, (NAMESPACE, RARE_WORD, RARE_WORD, RARE_WORD)).fetchall()
        return [json.loads(row[6]) for row in rows]

    async def close() -> None:
        connection.close()

    return {"get": get, "search": search}, close


async def _postgres_calls(url: str) -> tuple[dict[str, Call], Callable[[], Awaitable[None]]]:
    """psycopg with a pool of autocommit connections, one per concurrent caller."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=CONCURRENCY, max_size=CONCURRENCY, kwargs={"autocommit": True}, open=False
    )
    await pool.open(wait=True)
    hot = _hot_uris()

    async def get() -> object:
        async with pool.connection() as connection:
            return await (await connection.execute(_POSTGRES_GET, (NAMESPACE, next(hot)))).fetchone()

    async def search() -> object:
        async with pool.connection() as connection:
            cursor = await connection.execute(_POSTGRES_SEARCH, (NAMESPACE, RARE_WORD, RARE_WORD, RARE_WORD))
            return await cursor.fetchall()

    return {"get": get, "search": search}, pool.close


# Measuring -------------------------------------------------------------------------------------------------


async def _measure(call: Call, concurrency: int, settings: Settings) -> Figure:
    start = time.monotonic() + settings.warmup
    completed = await closed_loop(call, concurrency, start_at=start, end_at=start + settings.duration)
    timings: list[float] = []
    end = time.monotonic() + settings.duration / 2
    while time.monotonic() < end:
        began = time.perf_counter()
        await call()
        timings.append(time.perf_counter() - began)
    return Figure(completed / settings.duration, Percentiles.of(timings))


async def _measure_stord(address: str, op: str, settings: Settings) -> Figure:
    async with AsyncClient(address, namespace=NAMESPACE) as client:
        return await _measure(_stord_calls(client)[op], CONCURRENCY, settings)


async def _measure_raw(url: str, op: str, settings: Settings) -> Figure:
    if url.startswith("sqlite:"):
        calls, close = _sqlite_calls(url.removeprefix("sqlite:///"))
        concurrency = 1  # sqlite3 calls block the loop: one caller is all it has
    else:
        calls, close = await _postgres_calls(url)
        concurrency = CONCURRENCY
    try:
        return await _measure(calls[op], concurrency, settings)
    finally:
        await close()


def _settle(url: str) -> None:
    """Leave none of the seeding's work to the measurements: the WAL checkpointed, statistics fresh."""
    if url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE agents")


def _bench_database(name: str, database: str, redis_url: str, workdir: Path, settings: Settings) -> list[Row]:
    workdir.mkdir(parents=True)
    try:
        create_schema(database)
        with (
            _stord(database, redis_url, workdir, "cached") as cached_address,
            _stord(database, "memory://", workdir, "uncached") as uncached_address,
        ):
            _progress(f"{name}: seeding {AGENTS:,} agents")
            run(_seed(uncached_address))
            _settle(database)
            figures: dict[str, dict[str, Figure]] = {op: {} for op in OPS}
            for op in OPS:  # each op on both daemons in turn, so neither always goes first
                _progress(
                    f"{name} {op}: stord without a read cache, with one on Redis, the database directly"
                )
                figures[op]["uncached"] = run(_measure_stord(uncached_address, op, settings))
                figures[op]["cached"] = run(_measure_stord(cached_address, op, settings))
                figures[op]["raw"] = run(_measure_raw(database, op, settings))
    except Exception as error:
        return [Row(name, op, error=repr(error)) for op in OPS]
    return [Row(name, op, figures[op]["cached"], figures[op]["uncached"], figures[op]["raw"]) for op in OPS]


# Reporting -------------------------------------------------------------------------------------------------


def _cells(row: Row) -> list[str]:
    if row.error is not None:
        return [row.backend, row.op, f"FAILED: {row.error}"]
    figures = [row.cached, row.uncached, row.raw]
    rates = [f"{figure.ops:,.0f}" if figure else "-" for figure in figures]
    latencies = [
        f"{figure.latency.p50:.2f} / {figure.latency.p99:.2f}" if figure else "-" for figure in figures
    ]
    return [row.backend, row.op, *rates, *latencies]


def render(rows: Sequence[Row], settings: Settings) -> str:
    header = [
        "backend",
        "op",
        "cached ops/s",
        "uncached ops/s",
        "raw ops/s",
        "cached p50/p99 ms",
        "uncached p50/p99 ms",
        "raw p50/p99 ms",
    ]
    lines = [header, *(_cells(row) for row in rows)]
    widths = [max(len(line[column]) for line in lines if column < len(line)) for column in range(len(header))]
    text = [
        " | ".join(cell.ljust(widths[column]) for column, cell in enumerate(line)).rstrip() for line in lines
    ]
    text.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(
        [
            *text,
            "",
            f"{AGENTS:,} agents in one namespace. get: GetAgent of {HOT_AGENTS} hot agents in turn; search:"
            f" SearchAgents for a word in the configuration of 1 agent in 1,000 (a scan of all {AGENTS:,},"
            " 10 found). cached: `stord serve` with the read cache on Redis; uncached: with the memory cache,"
            " so every read reaches the database. raw: the same SELECT on the same rows, sqlite3 with one"
            f" caller, psycopg with {CONCURRENCY} pooled connections.",
            f"ops/s: closed loop, {CONCURRENCY} AsyncClient callers in one process (raw: as said), for"
            f" {settings.duration:g} s after {settings.warmup:g} s of warm-up. p50/p99: one caller alone."
            f" Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end.",
        ]
    )


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.agents", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds measured per figure (default 2)")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds every ExitStack, so servers and daemons stop


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _arguments(argv)
    settings = Settings(duration=arguments.duration)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    rows: list[Row] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stord-bench-agents-")))
        (workdir / "redis").mkdir()
        redis_server = start_redis(workdir / "redis")
        stack.callback(redis_server.stop)
        for name in arguments.backends.split(","):
            if name == "sqlite":
                database = f"sqlite:///{workdir / 'sqlite' / 'stord.db'}"
            else:
                (workdir / "postgres-server").mkdir()
                postgres = start_postgres(workdir / "postgres-server")
                stack.callback(postgres.stop)
                database = postgres.create_database("agents")
            rows += _bench_database(name, database, redis_server.url, workdir / name, settings)
    print(render(rows, settings))
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

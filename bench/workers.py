"""`make bench`: cache Get and Set through `stord serve --workers 1` beside `--workers 2`, many connections.

Run from the repository root (`python -m bench.workers`). For each database (SQLite, PostgreSQL, Redis):
start what it needs, then for each worker count a daemon on it (both roles, so every worker shares them), and
measure the closed-loop throughput of several client processes, each spreading its callers over connections
of its own: the kernel hands each connection to one worker (SO_REUSEPORT), so one connection would exercise
one worker.
Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench._deploy import BACKENDS, DaemonError, StordDaemon
from bench._load import run
from bench._scenarios import OPS, Op, Settings, Window, client_processes, measure_throughput, on_store
from stord.client import AsyncClient

__all__ = ["main"]

WORKER_COUNTS = (1, 2)
DATABASES = ("sqlite", "postgres", "redis")
"""Every backend a daemon's workers can share; memory cannot be shared (`stord serve` refuses it)."""

_DISPATCH_DELAY = 0.5
"""Seconds for a job to reach the client processes and connect, before their warm-up starts."""


class SpreadStore:
    """CacheService through several AsyncClients, each on a TCP connection of its own, taken in turn."""

    def __init__(self, target: str, connections: int) -> None:
        # A subchannel pool per client: gRPC would otherwise share one connection between like channels.
        own = [("grpc.use_local_subchannel_pool", 1)]
        self._clients = [AsyncClient(target, options=own) for _ in range(connections)]
        self._turns = itertools.cycle(self._clients)

    async def get(self, key: str) -> bytes | None:
        return await next(self._turns).cache.get(key)

    async def set(self, key: str, value: bytes) -> None:
        await next(self._turns).cache.set(key, value)

    async def close(self) -> None:
        for client in self._clients:
            await client.close()


@dataclass(frozen=True)
class Load:
    """How the clients drive the daemon."""

    processes: int
    connections: int
    """Per client process."""
    concurrency: int
    """Callers per client process."""


@dataclass(frozen=True)
class Figure:
    """One daemon's throughput, and how many CPU cores it kept busy meanwhile (supervisor and workers)."""

    ops: float
    cores: float


@dataclass(frozen=True)
class Row:
    database: str
    op: Op
    by_workers: dict[int, Figure]
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        one, two = self.by_workers.get(1), self.by_workers.get(2)
        return two.ops / one.ops if one and two and one.ops else None


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time of the processes so far (utime and stime of /proc/<pid>/stat)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _daemon_pids(daemon: StordDaemon) -> list[int]:
    """The daemon's pid, and its workers' from the supervisor's `serving_workers` line."""
    for line in daemon.log_path.read_text(errors="replace").splitlines():
        if '"serving_workers"' in line:
            return [daemon.pid, *json.loads(line)["pids"]]
    return [daemon.pid]


def _throughput_in_process(target: str, op: Op, load: Load, window: Window) -> float:
    async def throughput() -> float:
        # The clients are made inside the event loop: a grpc.aio channel belongs to the loop it was made in.
        store = SpreadStore(target, load.connections)
        return await on_store(store, lambda store: measure_throughput(store, op, load.concurrency, window))

    return run(throughput())


def _measure(
    pool: ProcessPoolExecutor, daemon: StordDaemon, op: Op, load: Load, settings: Settings
) -> Figure:
    window = Window.after_warmup(settings, delay=_DISPATCH_DELAY)
    pids = _daemon_pids(daemon)
    rates = [
        pool.submit(_throughput_in_process, daemon.address, op, load, window) for _ in range(load.processes)
    ]
    time.sleep(max(window.start - time.monotonic(), 0))
    cpu_before = _cpu_seconds(pids)
    time.sleep(max(window.end - time.monotonic(), 0))
    cores = (_cpu_seconds(pids) - cpu_before) / (window.end - window.start)
    return Figure(sum(rate.result() for rate in rates), cores)


@contextlib.contextmanager
def _workers_environment(workers: int) -> Iterator[None]:
    """Start daemons with STORD_WORKERS set, the documented way to ask for workers."""
    before = os.environ.get("STORD_WORKERS")
    os.environ["STORD_WORKERS"] = str(workers)
    try:
        yield
    finally:
        if before is None:
            del os.environ["STORD_WORKERS"]
        else:
            os.environ["STORD_WORKERS"] = before


def _wait_all_workers(daemon: StordDaemon, workers: int, timeout: float = 60) -> None:
    """A daemon answers as soon as one worker serves; the figures need every one of them."""
    if workers == 1:
        return
    deadline = time.monotonic() + timeout
    while "serving_workers" not in daemon.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise DaemonError(f"the workers did not all start.\n{daemon.log_excerpt()}")
        time.sleep(0.1)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _bench_database(
    name: str, workdir: Path, pool: ProcessPoolExecutor, load: Load, settings: Settings
) -> list[Row]:
    _progress(f"{name}: starting")
    workdir.mkdir(parents=True)
    figures: dict[Op, dict[int, Figure]] = {op: {} for op in OPS}
    with ExitStack() as stack:
        try:
            url = BACKENDS[name].deploy(workdir, stack).stord_url
            for workers in WORKER_COUNTS:
                daemon_dir = workdir / f"workers-{workers}"
                daemon_dir.mkdir()
                with _workers_environment(workers):
                    daemon = stack.enter_context(StordDaemon.serving(url, BACKENDS[name].kind, daemon_dir))
                _wait_all_workers(daemon, workers)
                for op in OPS:
                    _progress(f"  {name} {op} with {workers} worker(s)")
                    figures[op][workers] = _measure(pool, daemon, op, load, settings)
                daemon.stop()
        except Exception as error:
            return [Row(name, op, figures[op], error=repr(error)) for op in OPS]
    return [Row(name, op, figures[op]) for op in OPS]


def _figure(figure: Figure | None) -> str:
    return "-" if figure is None else f"{figure.ops:,.0f} ({figure.cores:.2f})"


def _render(rows: Sequence[Row], load: Load, settings: Settings, load_before: float) -> str:
    header = [
        "database",
        "op",
        *(f"{workers} worker(s) ops/s (cores)" for workers in WORKER_COUNTS),
        "ratio 2/1",
    ]
    lines = [
        [
            row.database,
            row.op,
            *(_figure(row.by_workers.get(workers)) for workers in WORKER_COUNTS),
            "-" if row.ratio is None else f"{row.ratio:.2f}",
        ]
        for row in rows
    ]
    widths = [max(len(line[column]) for line in [header, *lines]) for column in range(len(header))]

    def aligned(cells: list[str]) -> str:
        padded = [
            cell.ljust(width) if column < 2 else cell.rjust(width)  # names left, figures right
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return " | ".join(padded).rstrip()

    text = [aligned(header), "-+-".join("-" * width for width in widths), *(aligned(line) for line in lines)]
    text += [
        "",
        f"Machine: {os.cpu_count()} CPUs, load average {load_before:.1f} before the run. Clients:"
        f" {load.processes} processes on the same machine, each with {load.connections} connections and"
        f" {load.concurrency} callers in a closed loop, for {settings.duration:g} s after a"
        f" {settings.warmup:g} s warm-up. Daemon: both roles on the database, STORD_WORKERS=1 or 2, the"
        " default info access log to a file; (cores) is the CPU it used over the measured seconds, supervisor"
        " and workers together. The clients share the machine's CPUs with the daemon: workers can only"
        " gain where CPU is left over. memory: not measured, `--workers` refuses it (each process would"
        " have a store of its own).",
    ]
    errors = [f"{row.database} {row.op}: {row.error}" for row in rows if row.error]
    if errors:
        text += ["", "Failures:", *errors]
    return "\n".join(text)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per figure (default 3)")
    parser.add_argument(
        "--databases",
        default=",".join(DATABASES),
        help="comma-separated, from sqlite, postgres, redis (default all)",
    )
    parser.add_argument("--client-processes", type=int, default=3, help="client processes (default 3)")
    parser.add_argument(
        "--connections", type=int, default=4, help="connections per client process (default 4)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="callers per client process (default 16)")
    arguments = parser.parse_args(argv)
    unknown = set(arguments.databases.split(",")) - set(DATABASES)
    if unknown:
        parser.error(f"unknown databases: {', '.join(sorted(unknown))}")
    return arguments


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds every ExitStack, so servers and daemons stop


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _arguments(argv)
    settings = Settings(duration=arguments.duration)
    load = Load(arguments.client_processes, arguments.connections, arguments.concurrency)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stord-bench-workers-")))
        pool = stack.enter_context(client_processes(load.processes))
        rows = [
            row
            for name in arguments.databases.split(",")
            for row in _bench_database(name, workdir / name, pool, load, settings)
        ]
    print(_render(rows, load, settings, load_before))
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

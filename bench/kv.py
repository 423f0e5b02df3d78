"""`make bench`: cache Get and Set through stord beside the same work done on each backend directly.

Run from the repository root (`python -m bench.kv`), so that the test harness is importable. For every
backend: start what it needs, a `stord serve` subprocess on it, then per operation measure stord's and the raw
backend's closed-loop throughput and open-loop latency at a fixed rate. Progress goes to stderr, the table to
stdout.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from bench import _h2load
from bench._deploy import BACKENDS, Backend, Deployment, StordDaemon, create_schema
from bench._echo import EchoServer
from bench._load import Percentiles, run
from bench._profile import UNARY_CATEGORIES, Profile
from bench._report import Row, render, save_json
from bench._scenarios import (
    GET_KEY,
    OPS,
    SET_KEYS,
    Op,
    Settings,
    Window,
    client_processes,
    measure_latency,
    measure_throughput,
    on_store,
    stord_throughput,
    throughput_from,
)
from bench._stores import StordStore, open_raw_store, raw_concurrency

__all__ = ["main"]


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.kv", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per figure (default 3)")
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated, from {', '.join(BACKENDS)} (default: all)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also save the figures as JSON")
    arguments = parser.parse_args(argv)
    unknown = set(arguments.backends.split(",")) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    return arguments


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _stord_latency(address: str, op: Op, settings: Settings) -> Percentiles:
    # The client is made inside the event loop: a grpc.aio channel belongs to the loop it was made in.
    return await on_store(StordStore(address), lambda store: measure_latency(store, op, settings))


async def _bench_raw(url: str, op: Op, settings: Settings) -> tuple[float, Percentiles]:
    concurrency = raw_concurrency(url, settings.concurrency)

    async def throughput() -> float:
        store = await open_raw_store(url, concurrency)
        window = Window.after_warmup(settings)
        return await on_store(store, lambda store: measure_throughput(store, op, concurrency, window))

    async def latency() -> Percentiles:
        store = await open_raw_store(url, concurrency)
        return await on_store(store, lambda store: measure_latency(store, op, settings))

    return await throughput(), await latency()


def _profile(daemon: StordDaemon, pool: ProcessPoolExecutor, op: Op, settings: Settings) -> Profile:
    """Profile the daemon under a closed loop of `op` from one client process, like the throughput run."""
    with Profile.attach(daemon.pid) as profile:
        throughput_from(pool, 1, daemon.address, op, settings)
    return profile


def _h2load_rates(stord: str, echo: str) -> tuple[float, float]:
    """Best of two h2load runs each, alternated, so both see the machine alike."""
    rates = [(_h2load.get_rate(stord, GET_KEY), _h2load.get_rate(echo, GET_KEY)) for _ in range(2)]
    return max(rate for rate, _ in rates), max(rate for _, rate in rates)


def _bench_op(
    backend: Backend,
    op: Op,
    daemon: StordDaemon,
    raw_url: str | None,
    pool: ProcessPoolExecutor,
    settings: Settings,
    echo: EchoServer,
) -> Row:
    _progress(f"  {backend.name} {op}")
    echo_ops = profile = h2load = None
    try:
        stord_ops, client_processes = stord_throughput(pool, daemon.address, op, settings)
        if op == "get":  # the same calls answered by a bare grpc.aio server, right after
            echo_ops, _ = stord_throughput(pool, echo.address, op, settings)
            profile = _profile(daemon, pool, op, settings)
            h2load = _h2load_rates(daemon.address, echo.address) if _h2load.available() else None
        stord_latency = run(_stord_latency(daemon.address, op, settings))
        raw_ops, raw_latency = run(_bench_raw(raw_url, op, settings)) if raw_url else (None, None)
    except Exception as error:
        return Row(backend.name, op, error=f"{error!r}\n{daemon.log_excerpt()}")
    shares = None if profile is None else profile.shares(UNARY_CATEGORIES)
    return Row(
        backend.name,
        op,
        stord_ops,
        client_processes,
        raw_ops,
        stord_latency,
        raw_latency,
        echo_ops=echo_ops,
        profile=shares or None,
        profile_error=None if profile is None else profile.problem,
        h2load=h2load,
    )


def _bench_backend(
    backend: Backend, workdir: Path, pool: ProcessPoolExecutor, settings: Settings, echo: EchoServer
) -> list[Row]:
    _progress(f"{backend.name}: starting")
    workdir.mkdir(parents=True)
    with ExitStack() as stack:
        try:
            deployment: Deployment = backend.deploy(workdir, stack)
            if deployment.raw_url is not None:
                create_schema(deployment.raw_url)
            daemon = stack.enter_context(StordDaemon.serving(deployment.stord_url, backend.kind, workdir))
        except Exception as error:
            return [Row(backend.name, op, error=str(error)) for op in OPS]
        return [_bench_op(backend, op, daemon, deployment.raw_url, pool, settings, echo) for op in OPS]


def _method(settings: Settings, load_before: float) -> list[str]:
    """How the figures were measured, a paragraph per topic."""
    concurrency, duration, warmup = settings.concurrency, settings.duration, settings.warmup
    processes = " or ".join(str(count) for count in settings.client_processes)
    return [
        f"Machine: {os.cpu_count()} CPUs, load average {load_before:.1f} before the run (other work on the"
        " machine makes the figures noisy).",
        "stord: a `stord serve` subprocess with the default info access log going to a file, both roles on"
        f" the backend. Get reads one existing key; Set writes one of {SET_KEYS:,} keys; 100-byte values,"
        " no TTL.",
        f"Throughput: closed loop for {duration:g} s after a {warmup:g} s warm-up. stord: {concurrency}"
        f" AsyncClient callers in {processes} client processes, the better figure shown, (Np) says which."
        f" Raw, in one process: redis-py asyncio with {concurrency} tasks; psycopg with {concurrency} tasks"
        f" on {concurrency} autocommit connections; sqlite3 with one caller (WAL, synchronous=NORMAL, a"
        " commit per write).",
        f"Latency: open loop at {settings.rate:,.0f} req/s for {duration:g} s after the warm-up, one client"
        " process, timed from each request's scheduled send time to its answer. added = stord minus raw,"
        " percentile by percentile.",
        "echo: a bare grpc.aio server (bench/_echo.py, a process of its own) answering the same Get calls"
        " from the same client with a fixed response, measured right after stord's Get the same way; /echo"
        " = stord / echo. The Python client costs about as much CPU per call as the server, so on 2 CPUs"
        " both figures are bounded by the machine, not the server alone.",
        f"Profile: py-spy sampling the daemon for {duration:g} s under a closed-loop Get from one client"
        " process, after the figures above; shares of its busy samples by the innermost frame's category"
        " (bench/_profile.py).",
    ]


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds every ExitStack, so servers and daemons stop


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _arguments(argv)
    settings = Settings(duration=arguments.duration)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stord-bench-")))
        pool = stack.enter_context(client_processes(max(settings.client_processes)))
        echo = stack.enter_context(EchoServer.serving())
        rows = [
            row
            for name in arguments.backends.split(",")
            for row in _bench_backend(BACKENDS[name], workdir / name, pool, settings, echo)
        ]
    method = _method(settings, load_before)
    print(render(rows, settings.rate, method))
    if arguments.json is not None:
        save_json(arguments.json, rows, settings, method)
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

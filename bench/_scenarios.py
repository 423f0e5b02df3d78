"""The key-value scenarios, the same for stord and the raw backends, and the two ways each is measured."""

from __future__ import annotations

import itertools
import multiprocessing
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TypeVar

from bench._load import Call, Percentiles, closed_loop, open_loop, run
from bench._stores import StordStore, Store

__all__ = [
    "GET_KEY",
    "OPS",
    "SET_KEYS",
    "Op",
    "Settings",
    "Window",
    "client_processes",
    "measure_latency",
    "measure_throughput",
    "on_store",
    "stord_throughput",
    "throughput_from",
]

Op = Literal["get", "set"]
OPS: tuple[Op, ...] = ("get", "set")

VALUE = bytes(range(100))
GET_KEY = "bench:get"
SET_KEYS = 1000
"""Set cycles through this many keys, so every write after the first thousand replaces a value."""

_T = TypeVar("_T")

_DISPATCH_DELAY = 0.2
"""Seconds for a job to reach the client processes and connect, before their warm-up starts."""


@dataclass(frozen=True)
class Window:
    """A measuring window on `time.monotonic`, which every process on the machine shares."""

    start: float
    end: float

    @classmethod
    def after_warmup(cls, settings: Settings, *, delay: float = 0.0) -> Window:
        start = time.monotonic() + delay + settings.warmup
        return cls(start, start + settings.duration)


@dataclass(frozen=True)
class Settings:
    duration: float = 3.0
    warmup: float = 0.5
    rate: float = 1000.0
    concurrency: int = 16
    client_processes: tuple[int, ...] = (1, 2)
    """How many client processes share `concurrency` for stord's throughput; each is tried, the best kept.

    On two CPUs, one client process can starve the daemon less than two, or feed it better: it depends on
    how much CPU the backend's own server needs.
    """


def call_for(store: Store, op: Op) -> Call:
    """One request of the scenario: Get reads the existing key, Set writes the next of SET_KEYS keys."""
    if op == "get":
        return lambda: store.get(GET_KEY)
    keys = itertools.cycle([f"bench:set:{index}" for index in range(SET_KEYS)])
    return lambda: store.set(next(keys), VALUE)


async def on_store(store: Store, work: Callable[[Store], Awaitable[_T]]) -> _T:
    """Write the key Get reads, do `work`, close the store."""
    try:
        await store.set(GET_KEY, VALUE)
        return await work(store)
    finally:
        await store.close()


async def measure_throughput(store: Store, op: Op, concurrency: int, window: Window) -> float:
    """Closed loop: operations per second completed within the window (what runs before it is warm-up)."""
    completed = await closed_loop(call_for(store, op), concurrency, start_at=window.start, end_at=window.end)
    return completed / (window.end - window.start)


async def measure_latency(store: Store, op: Op, settings: Settings) -> Percentiles:
    """Open loop at `settings.rate`: percentiles of the latency from scheduled send time to answer."""
    latencies = await open_loop(
        call_for(store, op), rate=settings.rate, warmup=settings.warmup, duration=settings.duration
    )
    return Percentiles.of(latencies)


@contextmanager
def client_processes(count: int) -> Iterator[ProcessPoolExecutor]:
    """Worker processes for stord's throughput, started now so that no measurement waits for them.

    Spawned rather than forked (gRPC does not survive a fork), and deaf to Ctrl-C: the parent stops them.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(count, mp_context=context, initializer=_ignore_ctrl_c) as pool:
        for started in [pool.submit(time.sleep, 0.5) for _ in range(count)]:
            started.result()
        yield pool


def stord_throughput(pool: ProcessPoolExecutor, target: str, op: Op, settings: Settings) -> tuple[float, int]:
    """stord's best closed-loop throughput over `settings.client_processes`, and the process count it took."""
    return max(
        (throughput_from(pool, processes, target, op, settings), processes)
        for processes in settings.client_processes
    )


def throughput_from(
    pool: ProcessPoolExecutor, processes: int, target: str, op: Op, settings: Settings
) -> float:
    """Closed-loop throughput of `settings.concurrency` callers spread over `processes` of the pool's."""
    window = Window.after_warmup(settings, delay=_DISPATCH_DELAY)
    rates = [
        pool.submit(_stord_throughput_in_process, target, op, settings.concurrency // processes, window)
        for _ in range(processes)
    ]
    return sum(rate.result() for rate in rates)


def _stord_throughput_in_process(target: str, op: Op, concurrency: int, window: Window) -> float:
    async def throughput() -> float:
        return await on_store(
            StordStore(target), lambda store: measure_throughput(store, op, concurrency, window)
        )

    return run(throughput())


def _ignore_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)

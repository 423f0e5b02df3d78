"""Load generators: a closed loop for throughput and an open loop at a fixed rate for latency.

Both take a `Call`, one request to await, and know nothing of what it does. Clocks are `time.monotonic`, which
on Linux is CLOCK_MONOTONIC, the same in every process, so client processes can share a measuring window.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Call", "Percentiles", "closed_loop", "open_loop", "precise_loop", "run"]

_T = TypeVar("_T")

Call = Callable[[], Awaitable[object]]
"""One request: awaiting it sends the request and waits for its answer."""


async def closed_loop(call: Call, concurrency: int, *, start_at: float, end_at: float) -> int:
    """Run `concurrency` callers back to back until `end_at`; return the calls completed after `start_at`.

    Calls before `start_at` are the warm-up (connections, prepared statements, caches).
    """

    async def caller() -> int:
        completed = 0
        while time.monotonic() < end_at:
            await call()
            if start_at <= time.monotonic() <= end_at:
                completed += 1
        return completed

    return sum(await asyncio.gather(*(caller() for _ in range(concurrency))))


@dataclass(frozen=True)
class Percentiles:
    """Latency percentiles in milliseconds."""

    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Percentiles:
        ordered = sorted(seconds)

        def rank(fraction: float) -> float:
            return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] * 1000

        return cls(p50=rank(0.50), p90=rank(0.90), p99=rank(0.99))

    def minus(self, other: Percentiles) -> Percentiles:
        return Percentiles(self.p50 - other.p50, self.p90 - other.p90, self.p99 - other.p99)


async def open_loop(call: Call, *, rate: float, warmup: float, duration: float) -> list[float]:
    """Send `rate` calls per second whatever the answers do; return the latencies (s) after the warm-up.

    A latency runs from the call's scheduled send time to its answer, so time spent queued behind slow
    answers counts. Run it on a loop from `precise_loop`, or the schedule slips by up to a millisecond.
    """
    loop = asyncio.get_running_loop()
    interval = 1 / rate
    first_measured = round(warmup * rate)
    latencies: list[float] = []
    in_flight: set[asyncio.Task[None]] = set()

    async def timed(index: int, scheduled: float) -> None:
        await call()
        if index >= first_measured:
            latencies.append(time.monotonic() - scheduled)

    start = time.monotonic()
    try:
        for index in range(round((warmup + duration) * rate)):
            scheduled = start + index * interval
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(timed(index, scheduled))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        while in_flight:
            await asyncio.gather(*in_flight)
    finally:
        for task in in_flight:
            task.cancel()
    return latencies


def precise_loop() -> asyncio.AbstractEventLoop:
    """An event loop whose timers keep microseconds, for `asyncio.Runner(loop_factory=precise_loop)`.

    The default epoll selector rounds every wait up to a whole millisecond, which would make an open loop at
    1,000 requests/s send up to a millisecond late; select() waits in microseconds.
    """
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


def run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """`asyncio.run` on a `precise_loop`."""
    with asyncio.Runner(loop_factory=precise_loop) as runner:
        return runner.run(coroutine)

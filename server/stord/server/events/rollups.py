"""Analytics from hourly rollups: which hours a range reads from rollups and which edges from the events.

Backends keep, per (namespace, agent, hour), the figures GetAnalytics sums and the distinct sessions; the
hour is the finest bucket, and days and ISO weeks are unions of whole hours, so any bucket is a sum of
hours. A range whose ends are not on the hour reads the hours it covers whole from the rollups and its
partial first and last hours from the events themselves, so the answer is the scan's to the millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

from stord.server.events.port import Granularity

__all__ = ["HOUR_MS", "BucketGrid", "RollupSplit", "bucket_grid", "hour_of", "split_range"]

HOUR_MS = 3_600_000

_WIDTHS = {Granularity.HOUR: HOUR_MS, Granularity.DAY: 24 * HOUR_MS, Granularity.WEEK: 7 * 24 * HOUR_MS}
_ORIGINS = {Granularity.HOUR: 0, Granularity.DAY: 0, Granularity.WEEK: -3 * 24 * HOUR_MS}
"""Days and hours on the epoch's grid; weeks from Monday 1969-12-29 00:00 UTC (ISO weeks)."""

_EMPTY = (1, 0)
"""An inclusive millisecond range that selects nothing."""


@dataclass(frozen=True, slots=True)
class BucketGrid:
    """Buckets of `width` milliseconds starting at `origin` plus any multiple of the width."""

    width: int
    origin: int


def bucket_grid(granularity: Granularity) -> BucketGrid:
    """Return the grid of a granularity's buckets (every one a whole number of hours)."""
    return BucketGrid(_WIDTHS[granularity], _ORIGINS[granularity])


def hour_of(timestamp: int) -> int:
    """Return the start of the hour holding `timestamp` (floored, also before the epoch)."""
    return timestamp - timestamp % HOUR_MS


@dataclass(frozen=True, slots=True)
class RollupSplit:
    """How a range [from, to] (milliseconds, both included) reads: whole hours, then two raw edges."""

    first_hour: int
    """The first hour read from the rollups."""
    end_hour: int
    """The hour after the last one read from the rollups; equal to first_hour when there is none."""
    head: tuple[int, int]
    """The milliseconds before first_hour to read from the events, both ends included (maybe empty)."""
    tail: tuple[int, int]
    """The milliseconds from end_hour on to read from the events, both ends included (maybe empty)."""


def split_range(from_time: int, to_time: int) -> RollupSplit:
    """Split [from_time, to_time] into the hours it covers whole and its partial first and last hours."""
    first_hour = -(-from_time // HOUR_MS) * HOUR_MS  # the first hour starting at or after from_time
    end_hour = (to_time + 1) // HOUR_MS * HOUR_MS  # hours ending at or before to_time end before this
    if first_hour >= end_hour:  # no hour lies whole inside the range: read it all from the events
        return RollupSplit(first_hour, first_hour, (from_time, to_time), _EMPTY)
    head = (from_time, first_hour - 1) if from_time < first_hour else _EMPTY
    tail = (end_hour, to_time) if end_hour <= to_time else _EMPTY
    return RollupSplit(first_hour, end_hour, head, tail)

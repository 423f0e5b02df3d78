"""Progress of an export or import on stderr: a bar on a terminal, a plain line now and then elsewhere."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "ProgressStyle"]

_BAR_WIDTH = 30
_BAR_INTERVAL = 0.1
"""Seconds between redraws of the bar."""
_LINE_INTERVAL = 5.0
"""Seconds between plain progress lines."""
_MB = 1_000_000


class ProgressStyle(enum.Enum):
    """How progress shows: `auto` picks `bar` on a terminal and `lines` elsewhere."""

    AUTO = "auto"
    BAR = "bar"
    LINES = "lines"
    NONE = "none"


class Progress:
    """Shows how far a transfer is: records done, against a total of records or of bytes when known.

    `update` is cheap to call per batch: it draws at most every 0.1 s (bar) or 5 s (lines).
    """

    def __init__(
        self,
        stream: TextIO,
        style: ProgressStyle,
        *,
        verb: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if style is ProgressStyle.AUTO:
            style = ProgressStyle.BAR if stream.isatty() else ProgressStyle.LINES
        self._stream = stream
        self._style = style
        self._verb = verb
        self._clock = clock
        self._interval = _BAR_INTERVAL if style is ProgressStyle.BAR else _LINE_INTERVAL
        self._started = self._drawn = clock()
        self._total: int | None = None
        self._in_bytes = False
        self._records = 0
        self._position = 0
        self._bar_shown = False

    def start(self, *, total: int | None, in_bytes: bool = False) -> None:
        """Begin counting; `total` is the expected records (or bytes, `in_bytes`), None when unknown."""
        self._total = total
        self._in_bytes = in_bytes
        self._started = self._drawn = self._clock()

    def update(self, *, records: int, position: int | None = None) -> None:
        """Record that `records` are done and, for a total in bytes, `position` bytes consumed."""
        self._records = records
        self._position = records if position is None else position
        now = self._clock()
        if now - self._drawn >= self._interval:
            self._drawn = now
            self._draw(now)

    def finish(self) -> None:
        """Draw the final state; a bar then gives its line back."""
        if self._style is ProgressStyle.BAR:
            self._draw(self._clock())
        self.interrupt()

    def interrupt(self) -> None:
        """End the bar's line, if one is shown, so that a message can follow."""
        if self._bar_shown:
            self._bar_shown = False
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        if self._style is ProgressStyle.NONE:
            return
        elapsed = max(now - self._started, 1e-9)
        rate = self._records / elapsed
        fraction = None
        if self._total:
            fraction = min(self._position / self._total, 1.0)
        if self._in_bytes and self._total:
            amount = f"{self._position / _MB:,.1f}/{self._total / _MB:,.1f} MB, {self._records:,} records"
        elif self._total:
            amount = f"{self._records:,}/~{self._total:,} records"
        else:
            amount = f"{self._records:,} records"
        if self._style is ProgressStyle.BAR:
            filled = round(_BAR_WIDTH * (fraction or 0.0))
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            percent = "" if fraction is None else f" {fraction:4.0%}"
            self._stream.write(
                f"\r{self._verb} [{bar}]{percent}  {amount}  {rate:,.0f} records/s  {elapsed:.1f} s\x1b[K"
            )
            self._bar_shown = True
        else:
            percent = "" if fraction is None else f" ({fraction:.0%})"
            self._stream.write(
                f"stord {self._verb}: {amount}{percent}, {rate:,.0f} records/s, {elapsed:.0f} s\n"
            )
        self._stream.flush()

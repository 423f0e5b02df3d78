"""The figures of one run: a plain-text table, the targets they are held against, and JSON."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._load import Percentiles

__all__ = ["Row", "render", "save_json"]

ADDED_P90_TARGET_MS = 0.75
"""Most latency stord may add to a cache Get against Redis, at p90 and 1,000 requests/s."""

ADDED_P99_TARGET_MS = 1.5
"""The same at p99."""

OF_ECHO_TARGET = 0.75
"""Least share of a bare grpc.aio server's Get throughput, same client, same run, that stord should reach."""

_WIDTH = 110


@dataclass(frozen=True)
class Row:
    """One backend x operation; a raw figure is None where there is no raw counterpart."""

    backend: str
    op: str
    stord_ops: float | None = None
    stord_client_processes: int | None = None
    raw_ops: float | None = None
    stord_latency: Percentiles | None = None
    raw_latency: Percentiles | None = None
    echo_ops: float | None = None
    """A bare grpc.aio server's throughput for the same calls from the same client, measured next."""
    profile: dict[str, float] | None = None
    """The daemon's CPU by category during Get, from py-spy (see bench/_profile.py)."""
    profile_error: str | None = None
    h2load: tuple[float, float] | None = None
    """Get requests/s of stord and of the echo, from h2load (a C client), when it is installed."""
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        return self.stord_ops / self.raw_ops if self.stord_ops and self.raw_ops else None

    @property
    def of_echo(self) -> float | None:
        return self.stord_ops / self.echo_ops if self.stord_ops and self.echo_ops else None

    @property
    def added(self) -> Percentiles | None:
        if self.stord_latency is None or self.raw_latency is None:
            return None
        return self.stord_latency.minus(self.raw_latency)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _latency(value: Percentiles | None) -> str:
    return "-" if value is None else f"{value.p50:.2f} / {value.p90:.2f} / {value.p99:.2f}"


def _cells(row: Row) -> list[str]:
    if row.error is not None:
        return [row.backend, row.op, "FAILED (see below)"]
    return [
        row.backend,
        row.op,
        _rate(row.stord_ops) + (f" ({row.stord_client_processes}p)" if row.stord_client_processes else ""),
        _rate(row.raw_ops),
        _ratio(row.ratio),
        _rate(row.echo_ops),
        _ratio(row.of_echo),
        _latency(row.stord_latency),
        _latency(row.raw_latency),
        _latency(row.added),
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(line[column]) for line in [header, *rows] if column < len(line))
        for column in range(len(header))
    ]
    left_aligned = 2  # backend and op; figures align right

    def line(cells: list[str]) -> str:
        padded = [
            cell.ljust(widths[column]) if column < left_aligned else cell.rjust(widths[column])
            for column, cell in enumerate(cells)
        ]
        return " | ".join(padded).rstrip()

    return [line(header), "-+-".join("-" * width for width in widths), *(line(cells) for cells in rows)]


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _target_lines(rows: Sequence[Row]) -> list[str]:
    redis_get = next((row.added for row in rows if (row.backend, row.op) == ("redis", "get")), None)
    latency = (
        "not measured"
        if redis_get is None
        else f"p90 {redis_get.p90:.2f} ms {_verdict(redis_get.p90 < ADDED_P90_TARGET_MS)},"
        f" p99 {redis_get.p99:.2f} ms {_verdict(redis_get.p99 < ADDED_P99_TARGET_MS)}"
    )
    rates = ", ".join(
        f"{row.backend} {row.of_echo:.2f} {_verdict(row.of_echo >= OF_ECHO_TARGET)}"
        for row in rows
        if row.op == "get" and row.of_echo is not None
    )
    return [
        "Targets:",
        f"  added latency of a cache Get on Redis at 1,000 req/s, p90 < {ADDED_P90_TARGET_MS} ms and p99 <"
        f" {ADDED_P99_TARGET_MS} ms: {latency}",
        f"  Get RPCs/s >= {OF_ECHO_TARGET} of the bare echo's: {rates or 'not measured'}",
    ]


def _profile_lines(rows: Sequence[Row]) -> list[str]:
    lines = [
        f"  {row.backend} {row.op}: "
        + (", ".join(f"{name} {share:.0%}" for name, share in row.profile.items()) if row.profile else "")
        + (row.profile_error or "")
        for row in rows
        if row.profile is not None or row.profile_error is not None
    ]
    h2load = [
        f"  {row.backend} get: stord {row.h2load[0]:,.0f}/s, echo {row.h2load[1]:,.0f}/s,"
        f" /echo {row.h2load[0] / row.h2load[1]:.2f}"
        for row in rows
        if row.h2load is not None
    ]
    lines = ["Where the daemon's CPU went (py-spy, busy samples):", *lines] if lines else []
    if h2load:
        lines += ["Get with h2load (a C client, no Python client's CPU; best of 2 each):", *h2load]
    return lines


def _failure_lines(rows: Sequence[Row]) -> list[str]:
    """Each error once, naming the operations it stopped (a daemon that never started stops them all)."""
    stopped: dict[str, list[str]] = {}
    for row in rows:
        if row.error is not None:
            stopped.setdefault(row.error, []).append(f"{row.backend} {row.op}")
    return [f"{', '.join(names)}: {error}" for error, names in stopped.items()]


def render(rows: Sequence[Row], rate: float, method: Sequence[str]) -> str:
    """The table, how it was measured, the targets, then any failure with its daemon log."""
    at = f"@{rate:,.0f}/s"
    header = [
        "backend",
        "op",
        "stord ops/s",
        "raw ops/s",
        "ratio",
        "echo ops/s",
        "/echo",
        f"stord p50/p90/p99 ms {at}",
        f"raw p50/p90/p99 ms {at}",
        "added p50/p90/p99 ms",
    ]
    lines = _table(header, [_cells(row) for row in rows])
    lines += ["", *(textwrap.fill(paragraph, _WIDTH, subsequent_indent="  ") for paragraph in method)]
    lines += ["", *_profile_lines(rows)]
    lines += ["", *_target_lines(rows)]
    failures = _failure_lines(rows)
    if failures:
        lines += ["", "Failures:", *failures]
    return "\n".join(lines)


def save_json(path: Path, rows: Sequence[Row], settings: Any, method: Sequence[str]) -> None:
    """Write every figure, the added latency, and the settings and method they were measured with."""

    def figures(row: Row) -> dict[str, Any]:
        added = row.added
        return {
            **dataclasses.asdict(row),
            "ratio": row.ratio,
            "of_echo": row.of_echo,
            "added": added and dataclasses.asdict(added),
        }

    document = {
        "settings": dataclasses.asdict(settings),
        "method": list(method),
        "targets": {
            "redis_get_added_p90_ms_below": ADDED_P90_TARGET_MS,
            "redis_get_added_p99_ms_below": ADDED_P99_TARGET_MS,
            "get_share_of_echo_at_least": OF_ECHO_TARGET,
        },
        "rows": [figures(row) for row in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")

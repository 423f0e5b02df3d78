"""Export a backend's records to a stream and import a stream into a backend, counting as they go."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson

from stord.server.ports import NamespaceOccupied, StoreError
from stord.server.transfer._format import (
    FOOTER,
    RECORD_KINDS,
    FormatError,
    check_footer,
    check_header,
    decode_record,
    encode_record,
    footer,
    header,
    record_kind,
)
from stord.server.transfer._progress import Progress
from stord.server.transfer.port import TransferRecord, TransferStore

__all__ = ["Summary", "TransferError", "export_records", "import_records"]

IMPORT_BATCH = 1000
"""Records per batch handed to the backend (a batch is also cut at IMPORT_BATCH_BYTES)."""
IMPORT_BATCH_BYTES = 8_000_000


class TransferError(Exception):
    """An export or import failed; the message says where and why (an import then wrote nothing)."""


@dataclass
class Summary:
    """What a transfer moved, and how fast."""

    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    """Records by kind."""
    namespaces: set[str] = field(default_factory=set)
    seconds: float = 0.0
    size: int = 0
    """Bytes written or read."""

    @property
    def records(self) -> int:
        return sum(self.counts.values())

    def add(self, records: list[TransferRecord]) -> None:
        for record in records:
            self.counts[record_kind(record)] += 1
            self.namespaces.add(record.namespace)

    def describe(self, verb: str) -> str:
        """Return the summary lines, such as `exported 1,200 records of 2 namespaces in 0.4 s ...`."""
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{verb} {self.records:,} records of {len(self.namespaces)} namespace(s) in {self.seconds:.2f} s"
            f" ({rate:,.0f} records/s, {self.size / 1_000_000:,.1f} MB)"
        ]
        width = max(len(kind) for kind in RECORD_KINDS)
        lines += [
            f"  {kind:<{width}}  {self.counts[kind]:>12,}" for kind in RECORD_KINDS if self.counts[kind]
        ]
        return "\n".join(lines)


async def export_records(
    store: TransferStore,
    output: BinaryIO,
    *,
    namespace: str | None,
    source: str,
    stord_version: str,
    progress: Progress,
) -> Summary:
    """Write the header, every record of `namespace` (None: all) and the footer to `output`.

    Values that expired by the time the export starts are left out; what expires later keeps its absolute
    expiry time.
    """
    from stord.server.read_cache import NAMESPACE as READ_CACHE_NAMESPACE  # pulls in metrics: only here

    started = time.monotonic()
    summary = Summary()
    progress.start(total=await store.count(namespace))
    created_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    first = header(source=source, namespace=namespace, created_at=created_at, stord_version=stord_version)
    summary.size += _write_line(output, first)
    async with contextlib.aclosing(store.dump(namespace, now=time.time())) as batches:
        async for batch in batches:
            # Read-through cache entries (in a cache role's database) are derived, and no client's namespace.
            records = [record for record in batch if record.namespace != READ_CACHE_NAMESPACE]
            chunk = b"".join([orjson.dumps(encode_record(record)) + b"\n" for record in records])
            output.write(chunk)
            summary.size += len(chunk)
            summary.add(records)
            progress.update(records=summary.records)
    summary.size += _write_line(output, footer(summary.counts))
    output.flush()
    progress.finish()
    summary.seconds = time.monotonic() - started
    return summary


def _write_line(output: BinaryIO, line: dict[str, object]) -> int:
    data = orjson.dumps(line) + b"\n"
    output.write(data)
    return len(data)


class _Reader:
    """Reads and checks an export line by line, in batches; the footer must close it."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.line = 0
        self.position = 0
        self.counts: collections.Counter[str] = collections.Counter()
        self.first_lines: dict[str, int] = {}
        """The line of each namespace's first record, to name where a namespace refused begins."""
        self.batch_lines: list[tuple[int, int]] = []
        """The first and last line of each batch yielded, in order."""

    def _parse(self, data: bytes) -> object:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise FormatError(self.line, f"not valid JSON ({error})") from None

    def batches(self) -> Iterator[list[TransferRecord]]:
        lines = iter(self._source)
        first = next(lines, b"")
        self.line, self.position = 1, len(first)
        if not first.strip():
            raise FormatError(1, "the input is empty: not a stord export")
        check_header(self._parse(first))
        batch: list[TransferRecord] = []
        size = 0
        batch_start = 0
        for data in lines:
            self.line += 1
            self.position += len(data)
            if not data.strip():
                continue
            parsed = self._parse(data)
            if isinstance(parsed, dict) and parsed.get("kind") == FOOTER:
                check_footer(parsed, self.line, self.counts)
                last = self.line - 1
                self._check_end(lines)
                if batch:
                    self.batch_lines.append((batch_start, last))
                    yield batch
                return
            record = decode_record(parsed, self.line)
            self.counts[record_kind(record)] += 1
            self.first_lines.setdefault(record.namespace, self.line)
            if not batch:
                batch_start = self.line
            batch.append(record)
            size += len(data)
            if len(batch) >= IMPORT_BATCH or size >= IMPORT_BATCH_BYTES:
                self.batch_lines.append((batch_start, self.line))
                yield batch
                batch, size = [], 0
        raise FormatError(self.line, "the input ends without its footer line: it was cut short")

    def _check_end(self, lines: Iterator[bytes]) -> None:
        footer_line = self.line
        for data in lines:
            self.line += 1
            self.position += len(data)
            if data.strip():
                raise FormatError(self.line, f"a line after the footer (line {footer_line})")


async def import_records(
    store: TransferStore,
    source: BinaryIO,
    *,
    replace: bool,
    size: int | None,
    progress: Progress,
) -> Summary:
    """Read an export from `source` and write every record in one transaction of the store.

    Every line is checked before its batch is written, and the footer must close the input: a bad line, a
    cut-short input or a record the store refuses raises TransferError, and nothing at all is written.
    `size` is the input's length in bytes when known, for the progress display.
    """
    started = time.monotonic()
    summary = Summary()
    reader = _Reader(source)
    progress.start(total=size, in_bytes=size is not None)
    batches = reader.batches()
    written = 0
    lines = (1, 1)
    try:
        async with store.restore(replace=replace) as sink:
            # The next batch is read and checked in a thread while the store writes this one.
            reading = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
            try:
                while (batch := await reading) is not None:
                    lines = reader.batch_lines[written]  # appended before the batch was yielded
                    written += 1
                    reading = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
                    await sink.write(batch)
                    summary.add(batch)
                    progress.update(records=summary.records, position=reader.position)
            finally:
                with contextlib.suppress(Exception):
                    await reading  # let the thread leave the reader before the reader goes
    except FormatError as error:
        raise TransferError(f"{error}; nothing was imported") from error
    except NamespaceOccupied as error:
        line = reader.first_lines.get(error.namespace)
        where = f"line {line}" if line is not None else f"lines {lines[0]}-{lines[1]}"
        raise TransferError(f"{where}: {error}; nothing was imported") from error
    except StoreError as error:
        # The store writes a batch at once: the record it refused is one of the batch's lines.
        raise TransferError(f"in lines {lines[0]}-{lines[1]}: {error}; nothing was imported") from error
    progress.finish()
    summary.size = reader.position
    summary.seconds = time.monotonic() - started
    return summary

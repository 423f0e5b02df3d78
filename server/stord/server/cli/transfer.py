"""`stord export | import`: move data between backends as JSON Lines (see `stord.server.transfer`).

    stord export --data-dir /var/lib/stord -o stord.jsonl            # the SQLite default, every namespace
    stord export --namespace shop -o - | gzip > shop.jsonl.gz
    stord import --database postgresql://stord@db/stord -i stord.jsonl
    gunzip -c shop.jsonl.gz | stord import --database postgresql://stord@db/stord --replace

Both open the database named by the same settings as `stord serve` (`--config`, `--data-dir`, `--database`,
their STORD_* variables), directly, like pg_dump: no daemon is needed, and an export reads one consistent
snapshot while daemons keep serving. An import writes everything in one transaction or nothing. Progress goes
to stderr (a bar on a terminal), then a summary; the data goes to stdout only with `-o -`. Exit status 0 on
success, 1 on failure (the message names the line of the input), 2 for unusable arguments or settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import stat
import sys
from collections.abc import Iterator
from importlib.metadata import version as distribution_version
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from stord.server.config import ConfigError, Settings, load_settings, redact_url
from stord.server.ports import Backend, InvalidArgument, StoreError
from stord.server.transfer import (
    Progress,
    ProgressStyle,
    Summary,
    TransferError,
    export_records,
    import_records,
)

__all__ = ["TRANSFER_COMMANDS", "add_transfer_commands", "run_transfer_command"]

TRANSFER_COMMANDS = frozenset({"export", "import"})
"""The top-level commands this module serves."""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _add_database_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file (STORD_CONFIG)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where the SQLite default keeps its file (STORD_DATA_DIR)",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="sqlite:///path or postgresql://... (STORD_DATABASE_URL; default: SQLite in the data dir)",
    )
    parser.add_argument(
        "--progress",
        choices=[style.value for style in ProgressStyle],
        default=ProgressStyle.AUTO.value,
        help="progress on stderr: a bar on a terminal and a line every 5 s elsewhere (auto), or none",
    )


def add_transfer_commands(commands: Any) -> None:
    """Add `export` and `import` to the top-level subparsers."""
    export = commands.add_parser(
        "export", help="write every record of a namespace (or all) as JSON Lines, exactly as stored"
    )
    _add_database_flags(export)
    export.add_argument("--namespace", help="export this namespace only (default: every namespace)")
    export.add_argument(
        "-o", "--output", default="-", metavar="FILE", help="file to write, replaced on success; - for stdout"
    )
    load = commands.add_parser(
        "import", help="load an export into the database, in one transaction: all of it or nothing"
    )
    _add_database_flags(load)
    load.add_argument(
        "-i", "--input", default="-", metavar="FILE", help="file to read; - for stdin (default)"
    )
    load.add_argument(
        "--replace",
        action="store_true",
        help="delete what the file's namespaces hold first (default: refuse a namespace that holds data)",
    )


def _quiet_logs() -> None:
    """Send the backends' log events to stderr, warnings and errors only: stdout may carry the export."""
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.WARNING)


def run_transfer_command(arguments: argparse.Namespace) -> int:
    """Run `stord export` or `stord import`; return the exit status."""
    command = arguments.command
    try:
        settings = load_settings(
            config_file=arguments.config,
            flags={"data_dir": arguments.data_dir, "database": arguments.database},
        )
        namespace = _namespace(getattr(arguments, "namespace", None))
    except ConfigError as error:
        print(f"stord {command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    _quiet_logs()
    progress = Progress(sys.stderr, ProgressStyle(arguments.progress), verb=f"{command}ing")
    where = redact_url(settings.database_url)
    try:
        if command == "export":
            summary = asyncio.run(_export(settings, namespace, arguments.output, progress))
            print(f"stord export: {summary.describe('exported')}\n  from {where}", file=sys.stderr)
        else:
            summary = asyncio.run(_import(settings, arguments.input, arguments.replace, progress))
            print(f"stord import: {summary.describe('imported')}\n  into {where}", file=sys.stderr)
    except (TransferError, StoreError, OSError) as error:
        progress.interrupt()
        print(f"stord {command}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        progress.interrupt()
        outcome = {
            "import": "nothing was imported",
            "export": "the output ends short, without its footer line"
            if arguments.output == "-"
            else "no output file was written",
        }[command]
        print(f"stord {command}: interrupted; {outcome}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _namespace(name: str | None) -> str | None:
    from stord.server.rpc.calls import resolve_namespace

    try:
        return None if name is None else resolve_namespace(name)
    except InvalidArgument as error:
        raise ConfigError(f"--namespace {name!r}: {str(error).split(': ', 1)[-1]}") from None


async def _opened(settings: Settings, *, must_exist: bool) -> Backend:
    """Open the database as `stord serve` would (pending migrations applied)."""
    from stord.server.backends import create_backend, sqlite_path

    url = settings.database_url
    if must_exist and url.startswith("sqlite:") and not sqlite_path(url).exists():
        raise TransferError(f"there is no SQLite database at {sqlite_path(url)}")
    backend = create_backend(url, settings)
    await backend.open()
    return backend


async def _export(settings: Settings, namespace: str | None, output: str, progress: Progress) -> Summary:
    with _output(output) as stream:
        backend = await _opened(settings, must_exist=True)
        try:
            return await export_records(
                backend.transfer(),
                stream,
                namespace=namespace,
                source=backend.kind,
                stord_version=distribution_version("stord"),
                progress=progress,
            )
        finally:
            await backend.close()


async def _import(settings: Settings, source: str, replace: bool, progress: Progress) -> Summary:
    with _input(source) as (stream, size):  # before the database: a missing file must not create one
        backend = await _opened(settings, must_exist=False)
        try:
            store = backend.transfer()
            return await import_records(store, stream, replace=replace, size=size, progress=progress)
        finally:
            await backend.close()


@contextlib.contextmanager
def _output(name: str) -> Iterator[BinaryIO]:
    """Yield the stream to export to: stdout for `-`, else a file put in place only once complete."""
    if name == "-":
        yield sys.stdout.buffer
        return
    path = Path(name)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        try:
            opened = partial.open("wb", buffering=1 << 20)
        except OSError as error:
            raise TransferError(f"cannot write {name}: {error.strerror}") from None
        with opened as stream:
            yield stream
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _input(name: str) -> Iterator[tuple[BinaryIO, int | None]]:
    """Yield the stream to import from and its size when it is a regular file (stdin redirected from one)."""
    with contextlib.ExitStack() as stack:
        try:
            stream: BinaryIO = sys.stdin.buffer if name == "-" else stack.enter_context(Path(name).open("rb"))
        except OSError as error:
            raise TransferError(f"cannot read {name}: {error.strerror}") from None
        status = os.fstat(stream.fileno())
        yield stream, status.st_size if stat.S_ISREG(status.st_mode) else None

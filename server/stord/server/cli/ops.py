"""`stord kv | events | jobs`: look at a running daemon from a shell, through the Python client.

    stord kv set greeting hello --address 127.0.0.1:50051 --namespace demo
    stord kv get greeting
    stord kv keys 'user:*'
    stord events tail --session s-1 --count 10
    stord jobs stats emails thumbnails
    stord jobs purge --database postgresql://... --completed-job-retention-days 3

Every command but `jobs purge` (which works on the database itself) takes the connection options of
`cli.connect` (`--address`, `--namespace`, `--api-key` and the `--tls*` options, or their `STORD_*`
variables). Errors print `STATUS: details` on stderr and exit 1; a connection that fails at the TLS layer
says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.json_format import MessageToDict

from stord.server.cli.connect import (
    Connection,
    ConnectionOptionsError,
    add_connection_flags,
    connection_from,
)
from stord.v1 import events_pb2

if TYPE_CHECKING:
    from stord.client import Client

__all__ = ["OPS_COMMANDS", "add_ops_commands", "run_ops_command"]

OPS_COMMANDS = frozenset({"kv", "events", "jobs"})
"""The top-level commands this module serves."""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
"""128 + SIGINT, as a shell reports a command Ctrl-C ended: `v=$(stord kv get k)` must not read as found."""

_Run = Callable[[argparse.Namespace], int]


def _command(
    group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, run: _Run, **options: Any
) -> argparse.ArgumentParser:
    parser = group.add_parser(name, **options)
    add_connection_flags(parser)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds each call may take")
    parser.set_defaults(run_ops=run)
    return parser


def add_ops_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `kv`, `events` and `jobs` with the top-level parser."""
    kv = commands.add_parser("kv", help="read and write keys of a running daemon").add_subparsers(
        dest="kv_command", required=True
    )
    get = _command(kv, "get", _kv_get, help="print a key's value (exit 1 when it is absent)")
    get.add_argument("key")
    set_ = _command(kv, "set", _kv_set, help="store a value ('-' reads it from stdin)")
    set_.add_argument("key")
    set_.add_argument("value")
    set_.add_argument("--ttl", type=float, metavar="SECONDS", help="expiry, with --cache only")
    keys = _command(kv, "keys", _kv_keys, help="list keys matching a glob pattern, one a line")
    keys.add_argument("pattern", nargs="?", default="*")
    keys.add_argument("--limit", type=_at_least_0, default=0, help="stop after this many keys (0: all)")
    for parser in (get, set_, keys):
        parser.add_argument(
            "--cache", action="store_true", help="use CacheService instead of DatabaseService"
        )

    events = commands.add_parser("events", help="watch the event store").add_subparsers(
        dest="events_command", required=True
    )
    tail = _command(events, "tail", _events_tail, help="print new events as JSON lines until interrupted")
    tail.add_argument("--session", help="only this session's events")
    tail.add_argument("--agent", help="only this agent's events")
    tail.add_argument("--type", action="append", default=[], help="only this event type (repeatable)")
    tail.add_argument("--severity", action="append", default=[], help="only this severity (repeatable)")
    tail.add_argument("--count", type=_at_least_0, default=0, help="exit after this many events (0: never)")

    jobs = commands.add_parser("jobs", help="inspect job queues").add_subparsers(
        dest="jobs_command", required=True
    )
    stats = _command(jobs, "stats", _jobs_stats, help="count a queue's jobs by status")
    stats.add_argument("queues", nargs="+", metavar="QUEUE")
    stats.add_argument("--json", action="store_true", help="one JSON object a line instead of a table")
    purge = jobs.add_parser(
        "purge",
        help="delete the finished jobs past their retention now, in the database itself (no daemon needed)",
    )
    purge.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file (STORD_CONFIG)")
    purge.add_argument("--data-dir", dest="data_dir", metavar="DIR", help="STORD_DATA_DIR")
    purge.add_argument(
        "--database", metavar="URL", help="sqlite:///path or postgresql://... (STORD_DATABASE_URL)"
    )
    for status, default in (("completed", 7), ("failed", 30)):
        purge.add_argument(
            f"--{status}-job-retention-days",
            dest=f"{status}_job_retention_days",
            type=int,
            metavar="DAYS",
            help=f"delete {status} jobs older than this, 0 keeps them (default {default}, as `stord serve`)",
        )
    purge.set_defaults(run_ops=_jobs_purge)


def _at_least_0(text: str) -> int:
    """Parse a count whose 0 means no limit; refuse a negative one rather than read it as no limit."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or more, not {number}")
    return number


def run_ops_command(arguments: argparse.Namespace) -> int:
    """Run a `kv`, `events` or `jobs` command; return the exit status."""
    from stord.client import StordError, Unavailable

    run: _Run = arguments.run_ops
    try:
        arguments.connection = connection_from(arguments)
    except ConnectionOptionsError as error:
        print(f"stord: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run(arguments)
    except Unavailable as error:
        diagnosis = arguments.connection.diagnose()
        print(f"stord: {error}" + (f"\nstord: {diagnosis}" if diagnosis else ""), file=sys.stderr)
        return EXIT_FAILURE
    except StordError as error:
        print(f"stord: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except ValueError as error:  # an argument the client refuses before calling, e.g. an unknown event type
        print(f"stord: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _client(arguments: argparse.Namespace) -> Client:
    from stord.client import Client

    connection: Connection = arguments.connection
    return Client(
        connection.address,
        namespace=connection.namespace,
        api_key=connection.api_key,
        tls=connection.client_tls(),
        options=connection.channel_options(),
        timeout=arguments.timeout,
    )


def _kv_get(arguments: argparse.Namespace) -> int:
    with _client(arguments) as client:
        value = client.cache.get(arguments.key) if arguments.cache else client.db.get(arguments.key)
    if value is None:
        print(f"stord: {arguments.key}: not found", file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.buffer.write(value)
    if sys.stdout.isatty() and not value.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    return EXIT_OK


def _kv_set(arguments: argparse.Namespace) -> int:
    value = sys.stdin.buffer.read() if arguments.value == "-" else os.fsencode(arguments.value)
    if arguments.ttl is not None and not arguments.cache:
        print("stord: --ttl needs --cache (database keys do not expire)", file=sys.stderr)
        return EXIT_FAILURE
    with _client(arguments) as client:
        if arguments.cache:
            client.cache.set(arguments.key, value, ttl=arguments.ttl)
        else:
            client.db.set(arguments.key, value)
    return EXIT_OK


def _kv_keys(arguments: argparse.Namespace) -> int:
    with _client(arguments) as client:
        keys = client.cache.keys(arguments.pattern) if arguments.cache else client.db.keys(arguments.pattern)
        for index, key in enumerate(keys, start=1):
            print(key, flush=True)
            if index == arguments.limit:
                break
    return EXIT_OK


def _events_tail(arguments: argparse.Namespace) -> int:
    printed = 0
    with _client(arguments) as client:
        tail = client.events.tail(
            session_id=arguments.session,
            agent_id=arguments.agent,
            event_types=arguments.type,
            severities=arguments.severity,
        )
        with tail:
            print(f"stord: tailing events of {arguments.connection.address}", file=sys.stderr, flush=True)
            for events in tail:
                for event in events:
                    print(json.dumps(_event_line(event), separators=(",", ":"), sort_keys=True), flush=True)
                    printed += 1
                    if printed == arguments.count:
                        return EXIT_OK
    return EXIT_OK


def _event_line(event: events_pb2.Event) -> dict[str, object]:
    """An event as one JSON object: every output field, enum names as `--type`/`--severity` take them."""
    document = MessageToDict(
        event, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    document["event_type"] = _short_name(events_pb2.EventType.Name(event.event_type), "EVENT_TYPE_")
    document["severity"] = _short_name(events_pb2.Severity.Name(event.severity), "SEVERITY_")
    document["chain_index"] = event.chain_index  # proto JSON writes int64 as a string
    document["prev_hash"] = event.prev_hash if event.HasField("prev_hash") else None
    document["payload"] = _whole_numbers(document.get("payload", {}))
    document["metadata"] = _whole_numbers(document.get("metadata", {}))
    for input_only in ("payload_json", "metadata_json"):  # always empty on output, beside `payload`
        if not document.get(input_only):
            document.pop(input_only, None)
    return document


def _short_name(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def _whole_numbers(value: object) -> object:
    """Write a Struct's whole numbers (doubles on the wire) as integers, as the producer sent them."""
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _jobs_stats(arguments: argparse.Namespace) -> int:
    columns = ("pending", "running", "retrying", "completed", "failed")
    with _client(arguments) as client:
        rows = [(queue, client.jobs.stats(queue)) for queue in arguments.queues]
    if arguments.json:
        for queue, stats in rows:
            print(json.dumps({"queue": queue, **{column: getattr(stats, column) for column in columns}}))
        return EXIT_OK
    width = max(len("queue"), *(len(queue) for queue, _ in rows))
    print(f"{'queue':<{width}}" + "".join(f"  {column:>9}" for column in columns))
    for queue, stats in rows:
        print(f"{queue:<{width}}" + "".join(f"  {getattr(stats, column):>9}" for column in columns))
    return EXIT_OK


_PURGE_SETTINGS = ("data_dir", "database", "completed_job_retention_days", "failed_job_retention_days")


def _jobs_purge(arguments: argparse.Namespace) -> int:
    from stord.server.backends import create_backend, sqlite_path
    from stord.server.config import ConfigError, load_settings, redact_url
    from stord.server.jobs.sweeper import purge_finished_jobs
    from stord.server.logs import configure_logging
    from stord.server.ports import StoreError

    flags = {
        name: getattr(arguments, name) for name in _PURGE_SETTINGS if getattr(arguments, name) is not None
    }
    try:
        settings = load_settings(config_file=arguments.config, flags=flags)
    except ConfigError as error:
        print(f"stord: {error}", file=sys.stderr)
        return EXIT_USAGE
    url = settings.database_url
    if url.startswith("sqlite:") and not sqlite_path(url).exists():  # a mistyped --data-dir: create nothing
        print(f"stord: there is no SQLite database at {sqlite_path(url)}", file=sys.stderr)
        return EXIT_FAILURE

    configure_logging(log_format=settings.log_format, level="warning")  # the summary line says what was done

    async def purge() -> tuple[int, int]:
        backend = create_backend(settings.database_url, settings)
        await backend.open()
        try:
            done = await purge_finished_jobs(
                backend.jobs(),
                completed_days=settings.completed_job_retention_days,
                failed_days=settings.failed_job_retention_days,
            )
        finally:
            await backend.close()
        return done.completed, done.failed

    try:
        completed, failed = asyncio.run(purge())
    except StoreError as error:  # unreachable, or a database without jobs (Redis, memory has none to keep)
        print(f"stord: {redact_url(settings.database_url)}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"deleted {completed} completed and {failed} failed jobs")
    return EXIT_OK

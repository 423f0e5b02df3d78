"""`stord serve | migrate | health | config | version`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from stord.server.cli.connect import (
    CLIENT_ENVIRONMENT,
    Connection,
    ConnectionOptionsError,
    add_connection_flags,
    connection_from,
)
from stord.server.cli.keys import add_keys_commands, run_keys_command
from stord.server.cli.ops import OPS_COMMANDS, add_ops_commands, run_ops_command
from stord.server.cli.transfer import TRANSFER_COMMANDS, add_transfer_commands, run_transfer_command
from stord.server.config import (
    ENVIRONMENT,
    ConfigError,
    Settings,
    load_settings,
    load_settings_with_sources,
    redact_url,
    unread_variables,
)
from stord.server.logs import configure_logging

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


_FLAGS: dict[str, dict[str, Any]] = {
    "listen": {"metavar": "HOST:PORT", "help": "TCP address to serve on"},
    "unix_socket": {"metavar": "PATH", "help": "also serve on this Unix socket"},
    "data_dir": {"metavar": "DIR", "help": "where the SQLite default keeps its file"},
    "database": {"metavar": "URL", "help": "sqlite:///path, postgresql://..., redis://... or memory://"},
    "cache": {"metavar": "URL", "help": "memory://, redis://..., or any database URL"},
    "log_format": {"choices": ["json", "console"], "help": "log line format"},
    "log_level": {"choices": ["debug", "info", "warning", "error"], "help": "lowest level logged"},
    "access_log": {"choices": ["all", "slow-and-failed"], "help": "which calls get an rpc log line"},
    "access_log_sample": {
        "type": float,
        "metavar": "FRACTION",
        "help": "with --access-log all, log this fraction (0-1) of the fast successful calls",
    },
    "slow_call_ms": {"type": float, "metavar": "MS", "help": "a unary call this slow is always logged"},
    "retention_days": {
        "type": int,
        "metavar": "DAYS",
        "help": "delete events older than this, daily; 0 keeps them forever",
    },
    "completed_job_retention_days": {
        "type": int,
        "metavar": "DAYS",
        "help": "delete completed jobs older than this; 0 keeps them forever",
    },
    "failed_job_retention_days": {
        "type": int,
        "metavar": "DAYS",
        "help": "delete failed jobs older than this; 0 keeps them forever",
    },
    "api_keys_file": {"type": Path, "metavar": "FILE", "help": "require API keys listed in this YAML file"},
    "insecure": {
        "action": "store_const",
        "const": True,
        "help": "allow a non-loopback address without API keys",
    },
    "tls_cert": {"type": Path, "metavar": "PEM", "help": "serve TLS with this certificate chain"},
    "tls_key": {"type": Path, "metavar": "PEM", "help": "the private key of --tls-cert"},
    "tls_client_ca": {
        "type": Path,
        "metavar": "PEM",
        "help": "require client certificates signed by this CA",
    },
    "metrics_listen": {"metavar": "HOST:PORT", "help": "serve Prometheus metrics over HTTP here"},
    "workers": {"type": int, "metavar": "N", "help": "server processes sharing the TCP port"},
    "alert_interval": {
        "type": float,
        "metavar": "SECONDS",
        "help": "evaluate every alert rule this often; 0 never",
    },
}
"""Every settings flag; `_add_settings_flags` appends its environment variable and default to the help."""

_DEFAULTS_SHOWN = {
    "database": "sqlite:///<data dir>/stord.db",
    "unix_socket": "none",
    "api_keys_file": "none: no authentication, loopback only",
    "insecure": "off",
    "tls_cert": "none: plaintext",
    "tls_key": "none",
    "tls_client_ca": "none: no client certificates",
    "metrics_listen": "none: no metrics",
}


def _add_settings_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file (STORD_CONFIG)")
    for name in names:
        options = dict(_FLAGS[name])
        default = _DEFAULTS_SHOWN.get(name, Settings.model_fields[name].default)
        options["help"] = f"{options['help']} ({ENVIRONMENT[name]}; default {default})"
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, **options)


SERVE_SETTINGS = (
    "listen",
    "unix_socket",
    "data_dir",
    "database",
    "cache",
    "log_format",
    "log_level",
    "access_log",
    "access_log_sample",
    "slow_call_ms",
    "retention_days",
    "completed_job_retention_days",
    "failed_job_retention_days",
    "api_keys_file",
    "insecure",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "metrics_listen",
    "workers",
    "alert_interval",
)
"""The settings `stord serve` takes as flags (the others live in the YAML file only)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stord", description="gRPC storage daemon")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the daemon until SIGTERM")
    _add_settings_flags(serve, *SERVE_SETTINGS)
    config = commands.add_parser(
        "config",
        help="print the effective settings and where each came from (defaults < file < env < flags)",
        description="Print the settings `stord serve` would run with, given the same file, environment and"
        " flags, and where each value came from. Passwords in URLs are masked.",
    )
    _add_settings_flags(config, *SERVE_SETTINGS)
    config.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    add_keys_commands(commands)
    add_ops_commands(commands)
    add_transfer_commands(commands)
    migrate = commands.add_parser("migrate", help="bring the database schema up to date, then exit")
    _add_settings_flags(migrate, "data_dir", "database", "log_format", "log_level")
    health = commands.add_parser("health", help="exit 0 when the daemon reports SERVING")
    _add_settings_flags(health, "listen", "unix_socket")
    add_connection_flags(
        health,
        namespace=False,
        address_help="target to probe, e.g. unix:/run/s.sock (STORD_ADDRESS; default: the listen address)",
    )
    health.add_argument("--service", default="", help="a service name to probe instead of the whole daemon")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    commands.add_parser("version", help="print the version")
    return parser


def _flags(arguments: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(arguments).items() if key in Settings.model_fields}


def _settings(arguments: argparse.Namespace) -> Settings:
    return load_settings(config_file=arguments.config, flags=_flags(arguments))


_READ_VARIABLES = frozenset({"STORD_CONFIG", *ENVIRONMENT.values(), *CLIENT_ENVIRONMENT.values()})
"""Every environment variable a stord command reads."""


def _unread_variable_warnings(config_file: Path | None) -> list[dict[str, str]]:
    """Return one warning per `STORD_` variable nothing reads, with the likely intended name."""
    return [
        {"variable": name} | ({"did_you_mean": guess} if guess else {})
        for name, guess in unread_variables(os.environ, _READ_VARIABLES, config_file=config_file)
    ]


def _config(arguments: argparse.Namespace) -> int:
    """Print every setting with its value and its source; secrets masked."""
    for warning in _unread_variable_warnings(arguments.config):
        guess = f" (did you mean {warning['did_you_mean']}?)" if "did_you_mean" in warning else ""
        print(f"stord: {warning['variable']} is not a stord setting and is ignored{guess}", file=sys.stderr)
    try:
        settings, sources = load_settings_with_sources(config_file=arguments.config, flags=_flags(arguments))
    except ConfigError as error:
        print(f"stord: {error}", file=sys.stderr)
        return EXIT_USAGE
    rows: list[tuple[str, object, str]] = []
    for name, value in settings.model_dump(mode="json").items():
        if isinstance(value, dict):
            for key, item in value.items():
                rows.append((f"{name}.{key}", item, sources.get(f"{name}.{key}", "default")))
            continue
        if name in ("database", "cache"):
            value = redact_url(value) if value else f"{redact_url(settings.database_url)} (from data_dir)"
        rows.append((name, value, sources.get(name, "default")))
    for name, variable in CLIENT_ENVIRONMENT.items():
        given = os.environ.get(variable)
        if given:
            shown = "***" if name == "api_key" else given
            rows.append((f"client.{name}", shown, f"env {variable}"))
    if arguments.json:
        print(
            json.dumps({name: {"value": value, "source": source} for name, value, source in rows}, indent=2)
        )
        return EXIT_OK
    width = max(len(name) for name, _, _ in rows)
    value_width = min(60, max(len(_shown(value)) for _, value, _ in rows))
    for name, value, source in rows:
        print(f"{name:<{width}}  {_shown(value):<{value_width}}  {source}")
    return EXIT_OK


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _serve(settings: Settings) -> int:
    if settings.workers > 1:
        from stord.server.workers import serve_workers

        return serve_workers(settings)
    from stord.server.app import Daemon, StartupError

    try:
        asyncio.run(Daemon(settings).serve_until_signalled())
    except StartupError as error:
        structlog.get_logger("stord").error("startup_failed", error=str(error))
        return EXIT_FAILURE
    return EXIT_OK


def _migrate(settings: Settings) -> int:
    from stord.server.backends import create_backend
    from stord.server.ports import Unavailable

    async def run() -> None:
        backend = create_backend(settings.database_url, settings)
        try:
            await backend.open()  # opening applies every pending migration
        finally:
            await backend.close()

    try:
        asyncio.run(run())
    except Unavailable as error:
        structlog.get_logger("stord").error("migrate_failed", error=str(error))
        return EXIT_FAILURE
    structlog.get_logger("stord").info("schema_up_to_date", database=redact_url(settings.database_url))
    return EXIT_OK


def _health(settings: Settings, arguments: argparse.Namespace) -> int:
    """Probe grpc.health.v1: TLS as the client options say, else as the daemon's own settings serve."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    listen = settings.listen
    if listen.startswith("0.0.0.0:"):
        listen = "127.0.0.1:" + listen.split(":", 1)[1]  # a wildcard listener answers on loopback
    try:
        connection = connection_from(arguments, default_address=listen)
        if (
            not connection.tls
            and settings.tls_cert is not None
            and not connection.address.startswith("unix:")
        ):
            # The daemon these settings describe serves TLS on its TCP address: so must its probe.
            connection = connection_from(arguments, default_address=listen, tls_by_default=True)
    except ConnectionOptionsError as error:
        print(f"stord: {error}", file=sys.stderr)
        return EXIT_USAGE
    address = connection.address
    metadata = [] if connection.api_key is None else [("authorization", f"Bearer {connection.api_key}")]
    try:
        with connection.open_channel() as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=arguments.service),
                timeout=arguments.timeout,
                metadata=metadata,
            )
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            served = _served_services(connection, arguments.timeout)
            listed = f"; it serves {', '.join(served)}" if served else ""
            print(f"{address}: NOT_FOUND: unknown service {arguments.service!r}{listed}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"{address}: {error.code().name}: {error.details()}", file=sys.stderr)
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            diagnosis = connection.diagnose()
            if diagnosis:
                print(f"{address}: {diagnosis}", file=sys.stderr)
        return EXIT_FAILURE
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{address}: {status}")
    return EXIT_OK if response.status == health_pb2.HealthCheckResponse.SERVING else EXIT_FAILURE


def _served_services(connection: Connection, timeout: float) -> list[str]:
    """Return the service names the daemon's health check answers for, as its reflection lists them."""
    import grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    try:
        with connection.open_channel() as channel:
            grpc.channel_ready_future(channel).result(timeout=timeout)
            names = ProtoReflectionDescriptorDatabase(channel).get_services()
    except (grpc.RpcError, grpc.FutureTimeoutError):
        return []  # the hint is a courtesy: without reflection the unknown name is still reported
    return sorted(name for name in names if not name.startswith("grpc."))


EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE, as a shell reports a command whose reader went away (`stord config --json | head`)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    try:
        return _run(argv)
    except BrokenPipeError:
        # The reader is gone: stop quietly, and point stdout at /dev/null so the exit's flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _run(argv: Sequence[str] | None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.command == "health" or arguments.command in OPS_COMMANDS:
        # gRPC core logs a failed TLS handshake at INFO on stderr; the command reports it in its own words.
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if arguments.command == "version":
        from stord.server.app import stord_version

        print(stord_version())
        return EXIT_OK
    if arguments.command == "keys":
        return run_keys_command(arguments)
    if arguments.command in OPS_COMMANDS:
        return run_ops_command(arguments)
    if arguments.command in TRANSFER_COMMANDS:
        return run_transfer_command(arguments)
    if arguments.command == "config":
        return _config(arguments)
    try:
        settings = _settings(arguments)
    except ConfigError as error:
        print(f"stord: {error}", file=sys.stderr)
        return EXIT_USAGE
    if arguments.command == "health":
        return _health(settings, arguments)
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    for warning in _unread_variable_warnings(arguments.config):
        structlog.get_logger("stord").warning("unknown_environment_variable", **warning)
    if arguments.command == "migrate":
        return _migrate(settings)
    return _serve(settings)


if __name__ == "__main__":
    sys.exit(main())

"""`stord serve | migrate | health | version`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from stord.server.cli_keys import add_keys_commands, run_keys_command
from stord.server.cli_ops import OPS_COMMANDS, add_ops_commands, run_ops_command
from stord.server.cli_transfer import TRANSFER_COMMANDS, add_transfer_commands, run_transfer_command
from stord.server.config import ConfigError, Settings, load_settings, redact_url
from stord.server.logs import configure_logging

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _add_settings_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    flags: dict[str, dict[str, Any]] = {
        "listen": {"metavar": "HOST:PORT", "help": "TCP address to serve on (STORD_LISTEN)"},
        "unix_socket": {"metavar": "PATH", "help": "also serve on this Unix socket (STORD_UNIX_SOCKET)"},
        "data_dir": {"metavar": "DIR", "help": "where the SQLite default keeps its file (STORD_DATA_DIR)"},
        "database": {
            "metavar": "URL",
            "help": "sqlite:///path, postgresql://..., redis://... or memory:// (STORD_DATABASE_URL)",
        },
        "cache": {"metavar": "URL", "help": "memory://, redis://..., or any database URL (STORD_CACHE_URL)"},
        "log_format": {"choices": ["json", "console"], "help": "STORD_LOG_FORMAT"},
        "log_level": {"choices": ["debug", "info", "warning", "error"], "help": "STORD_LOG_LEVEL"},
        "retention_days": {"type": int, "metavar": "DAYS", "help": "event retention, 0 keeps forever"},
        "completed_job_retention_days": {
            "type": int,
            "metavar": "DAYS",
            "help": "keep completed jobs, 0 forever (STORD_COMPLETED_JOB_RETENTION_DAYS; default 7)",
        },
        "failed_job_retention_days": {
            "type": int,
            "metavar": "DAYS",
            "help": "keep failed jobs, 0 forever (STORD_FAILED_JOB_RETENTION_DAYS; default 30)",
        },
        "api_keys_file": {
            "type": Path,
            "metavar": "FILE",
            "help": "require API keys listed in this YAML file (STORD_API_KEYS_FILE)",
        },
        "insecure": {
            "action": "store_const",
            "const": True,
            "help": "allow a non-loopback address without API keys (STORD_INSECURE)",
        },
        "tls_cert": {"type": Path, "metavar": "PEM", "help": "server certificate chain (STORD_TLS_CERT)"},
        "tls_key": {"type": Path, "metavar": "PEM", "help": "server private key (STORD_TLS_KEY)"},
        "tls_client_ca": {
            "type": Path,
            "metavar": "PEM",
            "help": "require client certificates signed by this CA (STORD_TLS_CLIENT_CA)",
        },
        "metrics_listen": {
            "metavar": "HOST:PORT",
            "help": "serve Prometheus metrics over HTTP here (STORD_METRICS_LISTEN; default: none)",
        },
        "workers": {
            "type": int,
            "metavar": "N",
            "help": "server processes sharing the TCP port (STORD_WORKERS; default 1)",
        },
    }
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file (STORD_CONFIG)")
    for name in names:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, **flags[name])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stord", description="gRPC storage daemon")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the daemon until SIGTERM")
    _add_settings_flags(
        serve,
        "listen",
        "unix_socket",
        "data_dir",
        "database",
        "cache",
        "log_format",
        "log_level",
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
    )
    add_keys_commands(commands)
    add_ops_commands(commands)
    add_transfer_commands(commands)
    migrate = commands.add_parser("migrate", help="bring the database schema up to date, then exit")
    _add_settings_flags(migrate, "data_dir", "database", "log_format", "log_level")
    health = commands.add_parser("health", help="exit 0 when the daemon reports SERVING")
    _add_settings_flags(health, "listen", "unix_socket")
    health.add_argument(
        "--address", help="target to probe (default: the listen address), e.g. unix:/run/s.sock"
    )
    health.add_argument("--service", default="", help="a service name to probe instead of the whole daemon")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    commands.add_parser("version", help="print the version")
    return parser


def _settings(arguments: argparse.Namespace) -> Settings:
    flags = {key: value for key, value in vars(arguments).items() if key in Settings.model_fields}
    return load_settings(config_file=arguments.config, flags=flags)


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
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address = arguments.address or settings.listen
    if address.startswith("0.0.0.0:"):
        address = "127.0.0.1:" + address.split(":", 1)[1]  # a wildcard listener answers on loopback
    try:
        with grpc.insecure_channel(address) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=arguments.service), timeout=arguments.timeout
            )
    except grpc.RpcError as error:
        print(f"{address}: {error.code().name}: {error.details()}", file=sys.stderr)
        return EXIT_FAILURE
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{address}: {status}")
    return EXIT_OK if response.status == health_pb2.HealthCheckResponse.SERVING else EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    arguments = _parser().parse_args(argv)
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
    try:
        settings = _settings(arguments)
    except ConfigError as error:
        print(f"stord: {error}", file=sys.stderr)
        return EXIT_USAGE
    if arguments.command == "health":
        return _health(settings, arguments)
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    if arguments.command == "migrate":
        return _migrate(settings)
    return _serve(settings)


if __name__ == "__main__":
    sys.exit(main())

"""A throwaway PostgreSQL from the installed binaries: initdb in a fresh directory, a free port, no fsync."""

from __future__ import annotations

import atexit
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from tests.harness._system import ensure_installed, free_port
from tests.harness.network import IsolatedHost

__all__ = ["PostgresServer", "start_postgres"]

_USER = "postgres"
"""The superuser initdb creates; also the system account the server runs as when we are root."""

_ATTEMPTS = 3
"""A free port may be taken before PostgreSQL binds it; a few fresh ports make that harmless."""

_START_TIMEOUT = 30


@dataclass
class PostgresServer:
    """A running PostgreSQL cluster that this harness created, reachable on 127.0.0.1 without a password."""

    host: str
    port: int
    directory: pathlib.Path
    _bin: pathlib.Path = field(repr=False)
    _stopped: bool = field(default=False, repr=False)
    _inside: list[str] = field(default_factory=list, repr=False)
    """The command prefix that starts the server inside a test's network namespace; empty on this host."""

    @property
    def data_dir(self) -> pathlib.Path:
        return self.directory / "data"

    @property
    def log_file(self) -> pathlib.Path:
        return self.directory / "postgres.log"

    def url(self, database: str) -> str:
        """Return the URL of one database of this server."""
        return f"postgresql://{_USER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once (no checkpoint) and delete its files; safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        if (self.data_dir / "postmaster.pid").exists():
            _run([str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.directory, ignore_errors=True)

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server but keep its files, for `start_server` to start it again.

        `mode` is pg_ctl's: `fast` ends every session with an error and shuts down cleanly; `immediate`
        kills the server processes as a crash would (recovery runs at the next start).
        """
        done = _run([str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])
        if done.returncode != 0:
            raise RuntimeError(
                f"pg_ctl stop failed with exit status {done.returncode}:\n{done.stdout}{done.stderr}"
            )

    def start_server(self) -> None:
        """Start a server stopped by `stop_server` again, on the same data and port."""
        done = _run(_start_command(self), inside=self._inside)
        if done.returncode != 0:
            log = self.log_file.read_text(errors="replace") if self.log_file.exists() else "(no log)"
            raise RuntimeError(f"PostgreSQL did not start again: {done.stdout}{done.stderr}\n{log[-4000:]}")


def start_postgres(base_dir: pathlib.Path, *, host: IsolatedHost | None = None) -> PostgresServer:
    """Create a cluster, start it on a free 127.0.0.1 port and return once it accepts connections.

    With `host`, the server runs inside that network namespace, listening on its address and trusting
    connections from this host's end of the link. As root (initdb refuses root) the cluster belongs to the
    `postgres` account and lives in a fresh directory under /tmp, which that account can reach whatever the
    permissions of `base_dir`.
    """
    bin_dir = ensure_installed("initdb", ["/usr/lib/postgresql/*/bin/initdb"], "postgresql").parent
    if os.geteuid() == 0:
        directory = pathlib.Path(tempfile.mkdtemp(prefix="stord-postgres-", dir="/tmp"))
        account = pwd.getpwnam(_USER)
        os.chown(directory, account.pw_uid, account.pw_gid)
    else:
        base_dir.mkdir(parents=True, exist_ok=True)
        directory = pathlib.Path(tempfile.mkdtemp(prefix="postgres-", dir=base_dir))
    server = PostgresServer(
        host="127.0.0.1" if host is None else host.address,
        port=0,
        directory=directory,
        _bin=bin_dir,
        _inside=[] if host is None else host.command,
    )
    atexit.register(server.stop)
    try:
        initdb = [
            str(bin_dir / "initdb"),
            "-D", str(server.data_dir),
            "--auth=trust",
            "--no-sync",
            "-E", "UTF8",
            "--locale=C.UTF-8",
            "-U", _USER,
        ]  # fmt: skip
        done = _run(initdb)
        if done.returncode != 0:
            raise RuntimeError(
                f"initdb failed with exit status {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        if host is not None:
            with (server.data_dir / "pg_hba.conf").open("a") as rules:
                rules.write(f"host all all {host.host_address}/32 trust\n")
        failures: list[str] = []
        for _ in range(_ATTEMPTS):
            server.port = free_port()
            done = _run(_start_command(server), inside=server._inside)
            if done.returncode == 0:
                return server
            log = server.log_file.read_text(errors="replace") if server.log_file.exists() else "(no log)"
            failures.append(f"port {server.port}: {done.stdout}{done.stderr}\n--- log ---\n{log[-4000:]}")
        raise RuntimeError("PostgreSQL did not start:\n" + "\n".join(failures))
    except BaseException:
        server.stop()
        raise


def _start_command(server: PostgresServer) -> list[str]:
    """Return the pg_ctl command that starts `server` on its port and waits until it accepts connections."""
    settings = " ".join(
        [
            f"-p {server.port}",
            f"-c listen_addresses={server.host}",
            f"-c unix_socket_directories={server.directory}",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
        ]
    )
    return [
        str(server._bin / "pg_ctl"),
        "-w",
        "-t", str(_START_TIMEOUT),
        "-D", str(server.data_dir),
        "-l", str(server.log_file),
        "-o", settings,
        "start",
    ]  # fmt: skip


def _run(command: list[str], *, inside: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program, as the `postgres` account when we are root; `inside` prefixes it."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", _USER, "--", *command]
    command = [*(inside or []), *command]
    # A working directory every account can enter, so the server does not warn about ours.
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd="/", timeout=120)

"""SQLite connections for the engine: opening one (WAL, pragmas), migrating, and what its errors mean.

`connect` opens a connection as every engine thread needs it; `apply_migrations` brings a file's schema up
to date; `translate_error` turns sqlite3 errors into the domain errors callers can act on (Unavailable,
ResourceExhausted), and `write_blocked` tells a disk that refuses writes from a bug.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import structlog

from stord.server.config import SqliteOptions
from stord.server.ports import ResourceExhausted, StoreError, Unavailable
from stord.server.schema import Migration

__all__ = [
    "BUSY_CODES",
    "FREE_BYTES_FOR_WRITES",
    "apply_migrations",
    "connect",
    "free_bytes",
    "read_only_file_system",
    "rewrite_user_version",
    "translate_error",
    "translated_errors",
    "write_blocked",
]

_log = structlog.get_logger("stord.sqlite")

FREE_BYTES_FOR_WRITES = 1 << 20
"""Bytes that must be free again before writes that failed for a full disk count as working again."""


# Primary result codes meaning "cannot serve now" (a lock held too long, the disk, the file), not a bug.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)

BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

# Where a write fails while reads go on: the disk, not the database. A write failing for one of these makes
# the database unhealthy until the health check finds writes working again.
_WRITE_BLOCKED_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR})

_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""


def translate_error(path: Path, error: BaseException) -> BaseException:
    """Return a StoreError for an SQLite error about locks, the disk or the file; any other error unchanged.

    A full disk is ResourceExhausted; a read-only file system or file, and the other such errors, are
    Unavailable. The message names the cause.
    """
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(error, sqlite3.Error) or code is None or code & 0xFF not in _UNAVAILABLE_CODES:
        return error
    translated: StoreError
    blocked = write_blocked(path, error)
    if code & 0xFF == sqlite3.SQLITE_FULL:
        translated = ResourceExhausted(f"SQLite database {path}: {blocked}")
    elif blocked is not None:
        translated = Unavailable(f"SQLite database {path}: {blocked}")
    else:
        name = getattr(error, "sqlite_errorname", "")
        translated = Unavailable(f"SQLite database {path} cannot serve now: {error} ({name})")
    translated.__cause__ = error
    return translated


def write_blocked(path: Path, error: BaseException | None) -> str | None:
    """Say why writes fail when `error` means the disk is full or read-only; None for any other error.

    SQLite reports a write refused by a file system that went read-only as an I/O error
    (SQLITE_IOERR_WRITE); asking the file system tells the two apart.
    """
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(error, sqlite3.Error) or code is None or code & 0xFF not in _WRITE_BLOCKED_CODES:
        return None
    name = getattr(error, "sqlite_errorname", "")
    if code & 0xFF == sqlite3.SQLITE_FULL:
        return f"the disk is full ({name}): writes fail until space is freed; reads go on"
    if read_only_file_system(path):
        return f"its file system is read-only ({name}): writes fail until it is writable again; reads go on"
    if code & 0xFF == sqlite3.SQLITE_READONLY:
        return f"the file is read-only ({name}): writes fail until it is writable; reads go on"
    return None


def read_only_file_system(path: Path) -> bool:
    """Return whether the database's directory refuses a new file as read-only (EROFS).

    statvfs does not tell: ext4 refuses writes after an error (errors=remount-ro) without setting
    ST_RDONLY on recent kernels. Only called once writes fail, so the file it creates and removes costs
    nothing in normal operation.
    """
    try:
        descriptor, name = tempfile.mkstemp(prefix=".stord-probe-", dir=path.parent)
    except OSError as error:
        return error.errno == errno.EROFS
    os.close(descriptor)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return False


def free_bytes(path: Path) -> int:
    """Return the bytes available to the daemon on the database's file system (unknown: plenty)."""
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return FREE_BYTES_FOR_WRITES
    return stats.f_bavail * stats.f_frsize


def _switch_to_wal(connection: sqlite3.Connection, busy_timeout_ms: int) -> object:
    """Put the file in WAL mode and return the mode now in force.

    Two connections switching a new file at once get SQLITE_BUSY at once: SQLite does not call the busy
    handler for this lock, so wait here, as long as busy_timeout allows.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            return connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as error:
            busy = getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


@contextlib.contextmanager
def translated_errors(path: Path) -> Iterator[None]:
    """Re-raise SQLite errors about locks, the disk or the file as Unavailable; others unchanged."""
    try:
        yield
    except sqlite3.Error as error:
        translated = translate_error(path, error)
        if translated is error:
            raise
        raise translated from error


def connect(
    path: Path, options: SqliteOptions, *, reader: bool = False, busy_timeout_ms: int | None = None
) -> sqlite3.Connection:
    """Open a connection with stord's pragmas; transactions are explicit (BEGIN/COMMIT), never implicit."""
    busy_timeout_ms = options.busy_timeout_ms if busy_timeout_ms is None else busy_timeout_ms
    connection = sqlite3.connect(
        path,
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=False,  # each connection is used by one thread at a time, closed by another
        cached_statements=256,
    )
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not reader:
            # WAL is a property of the file: the writer sets it once, before any reader opens.
            mode = _switch_to_wal(connection, busy_timeout_ms)
            if str(mode).lower() != "wal":
                _log.warning("sqlite_not_wal", path=str(path), journal_mode=mode)
        connection.execute(f"PRAGMA synchronous = {options.synchronous}")
        connection.execute(f"PRAGMA cache_size = {-int(options.cache_size_mb) * 1024}")
        connection.execute("PRAGMA foreign_keys = ON")
        if reader:
            connection.execute("PRAGMA query_only = ON")
    except BaseException:
        connection.close()
        raise
    return connection


def _statements(sql: str) -> list[str]:
    """Split a migration script into statements; `executescript` would commit the migration's transaction."""
    statements: list[str] = []
    start = 0
    for index, char in enumerate(sql):
        if char == ";" and sqlite3.complete_statement(sql[start : index + 1]):
            statements.append(sql[start : index + 1])
            start = index + 1
    if sql[start:].strip():
        statements.append(sql[start:])
    return statements


def apply_migrations(connection: sqlite3.Connection, migrations: Sequence[Migration]) -> list[int]:
    """Apply the pending migrations in order, each with its record in one transaction; return their versions.

    Migration files must not contain BEGIN or COMMIT of their own. A version recorded by a concurrent
    migrator (another process on the same file) is skipped: each one is re-checked under the write lock.
    """
    connection.execute(_SCHEMA_MIGRATIONS)
    done = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
    applied: list[int] = []
    for migration in migrations:
        if migration.version in done:
            continue
        connection.execute("BEGIN IMMEDIATE")
        try:
            recorded = connection.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone()
            if recorded is None:
                for statement in _statements(migration.sql):
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, datetime.datetime.now(datetime.UTC).isoformat()),
                )
                applied.append(migration.version)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        if recorded is None:
            _log.info("sqlite_migration_applied", version=migration.version, name=migration.name)
    return applied


def rewrite_user_version(connection: sqlite3.Connection) -> None:
    """Write the database's first page without changing anything: a probe of whether writes commit."""
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    connection.execute(f"PRAGMA user_version = {int(version)}")

from __future__ import annotations

import contextlib
import math

import psycopg
import structlog
from psycopg.rows import TupleRow

from stord.server.backends.postgres._errors import UNREACHABLE
from stord.server.config import redact_url
from stord.server.ports import Unavailable
from stord.server.schema import load_migrations

__all__ = ["MIGRATION_LOCK", "connect_alone", "connect_timeout_seconds", "migrate"]

_log = structlog.get_logger("stord.postgres")

MIGRATION_LOCK = 0x73746F72642D6D67
"""The advisory lock key ("stord-mg") that serializes migrations of daemons starting together."""

_LOCK = "SELECT pg_advisory_lock(%(lock)s)"
_UNLOCK = "SELECT pg_advisory_unlock(%(lock)s)"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

_APPLIED = "SELECT version FROM schema_migrations"

_RECORD = "INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s)"


def connect_timeout_seconds(timeout: float) -> int:
    """Return libpq's `connect_timeout`: whole seconds, at least 2 (libpq's own minimum)."""
    return max(2, math.ceil(timeout))


async def connect_alone(
    url: str, *, connect_timeout: float, application_name: str
) -> psycopg.AsyncConnection[TupleRow]:
    """Open an autocommit connection of its own, outside the pool (to migrate, or to LISTEN)."""
    return await psycopg.AsyncConnection.connect(
        url,
        autocommit=True,
        connect_timeout=connect_timeout_seconds(connect_timeout),
        application_name=application_name,
    )


async def migrate(url: str, *, connect_timeout: float = 5.0) -> list[int]:
    """Apply the pending PostgreSQL migrations, each in its own transaction; return the versions applied.

    An advisory lock makes daemons that start together take turns: the first applies, the others find
    nothing left to do. Raise Unavailable when the server cannot be reached.
    """
    try:
        connection = await connect_alone(
            url, connect_timeout=connect_timeout, application_name="stord-migrate"
        )
    except UNREACHABLE as error:
        raise Unavailable(f"cannot reach PostgreSQL at {redact_url(url)}: {error}") from error
    applied: list[int] = []
    try:
        async with connection:
            await connection.execute(_LOCK, {"lock": MIGRATION_LOCK})
            try:
                await connection.execute(_CREATE_TABLE)
                cursor = await connection.execute(_APPLIED)
                done = {version for (version,) in await cursor.fetchall()}
                for migration in load_migrations("postgres"):
                    if migration.version in done:
                        continue
                    async with connection.transaction():
                        # Without parameters the file goes as one simple query, several statements at
                        # once; bytes because psycopg's typing takes only literal strings as SQL text.
                        await connection.execute(migration.sql.encode(), prepare=False)
                        await connection.execute(
                            _RECORD, {"version": migration.version, "name": migration.name}
                        )
                    applied.append(migration.version)
                    _log.info("postgres_migration_applied", version=migration.version, name=migration.name)
            finally:
                # A lost connection has released the lock already.
                with contextlib.suppress(*UNREACHABLE):
                    await connection.execute(_UNLOCK, {"lock": MIGRATION_LOCK})
    except UNREACHABLE as error:
        raise Unavailable(f"lost PostgreSQL at {redact_url(url)} while migrating: {error}") from error
    return applied

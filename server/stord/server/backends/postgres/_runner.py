"""How stores written once for both dialects (`backends/_sql.py`) run on PostgreSQL: the shared pool."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg.types.json import Jsonb

from stord.server.backends._sql import Row, SqlDialect, Statement
from stord.server.backends.postgres._pool import Pool
from stord.server.ports import JsonObject

__all__ = ["POSTGRES", "PostgresRunner"]


def _load_json(document: Any) -> JsonObject:
    """Type a jsonb column that holds an object, as psycopg decodes it."""
    value: JsonObject = document
    return value


POSTGRES = SqlDialect("postgres", lambda name: f"%({name})s", Jsonb, _load_json)
"""JSON columns are jsonb, which psycopg decodes itself."""


class PostgresRunner:
    """Each call on a connection of the pool; several statements in one transaction."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def write(self, statements: Sequence[Statement]) -> None:
        async with self._pool.connection() as connection, connection.transaction():
            for statement, parameters in statements:
                await connection.execute(statement, parameters)

    async def one(self, statement: str, parameters: Mapping[str, object]) -> Row | None:
        async with self._pool.connection() as connection:
            return await (await connection.execute(statement, parameters)).fetchone()

    async def all(
        self, statement: str, parameters: Mapping[str, object], *, bounded: bool = False
    ) -> Sequence[Row]:
        async with self._pool.connection() as connection:
            return await (await connection.execute(statement, parameters)).fetchall()

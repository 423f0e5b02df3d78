"""How stores written once for both dialects (`backends/_sql.py`) run on SQLite: the engine's threads."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence

from stord.server.backends._sql import Row, SqlDialect, Statement
from stord.server.backends.sqlite._engine import SqliteEngine
from stord.server.ports import JsonObject

__all__ = ["SQLITE", "SqliteRunner"]


def _dump_json(document: JsonObject) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def _load_json(text: str) -> JsonObject:
    document: JsonObject = json.loads(text)
    return document


SQLITE = SqlDialect("sqlite", lambda name: f":{name}", _dump_json, _load_json)
"""JSON columns hold text."""


class SqliteRunner:
    """Writes on the engine's writer thread (grouped commits); key lookups inline, scans on a reader."""

    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    async def write(self, statements: Sequence[Statement]) -> None:
        def run(connection: sqlite3.Connection) -> None:
            for statement, parameters in statements:
                connection.execute(statement, parameters)

        await self._engine.write(run)

    async def one(self, statement: str, parameters: Mapping[str, object]) -> Row | None:
        row: Row | None = await self._engine.lookup(
            lambda connection: connection.execute(statement, parameters).fetchone()
        )
        return row

    async def all(
        self, statement: str, parameters: Mapping[str, object], *, bounded: bool = False
    ) -> Sequence[Row]:
        def run(connection: sqlite3.Connection) -> Sequence[Row]:
            return connection.execute(statement, parameters).fetchall()

        if bounded:
            return await self._engine.lookup(run)
        return await self._engine.read(run)

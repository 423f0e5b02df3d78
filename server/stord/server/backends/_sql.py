"""What a SQL store written once for both dialects needs from each: how to run statements, how values differ.

A store module shared by SQLite and PostgreSQL (`_manifest_sql.py`) writes its statements once with `:name`
parameters, and runs them through an `SqlRunner`; the dialect turns the statements and JSON values into its
own. The runners are each engine's primitive: its writer thread or its pool.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stord.server.ports import JsonObject

__all__ = ["Row", "SqlDialect", "SqlRunner", "Statement"]

Row = Sequence[Any]
Statement = tuple[str, Mapping[str, object]]
"""A statement in the dialect's own parameter style, and its parameters by name."""

_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@dataclass(frozen=True, slots=True)
class SqlDialect:
    """What differs between the dialects for a store written once."""

    name: str
    parameter: Callable[[str], str]
    """The placeholder of a named parameter: `:name` or `%(name)s`."""
    dump_json: Callable[[JsonObject], object]
    """What a JSON column takes for an object: its text, or a jsonb adapter."""
    load_json: Callable[[Any], JsonObject]
    """The object a JSON column gives back: decoded text, or what psycopg decoded already."""

    def sql(self, statement: str) -> str:
        """Return a statement written with `:name` parameters in this dialect's style."""
        return _PARAMETER.sub(lambda match: self.parameter(match[1]), statement)


class SqlRunner(Protocol):
    """Runs a store's statements on one engine."""

    async def write(self, statements: Sequence[Statement]) -> None:
        """Run the statements in order in one transaction."""
        ...

    async def one(self, statement: str, parameters: Mapping[str, object]) -> Row | None:
        """Return the first row of a read bounded by a key, or None."""
        ...

    async def all(
        self, statement: str, parameters: Mapping[str, object], *, bounded: bool = False
    ) -> Sequence[Row]:
        """Return every row of a read; `bounded` when a key limits it to a few rows."""
        ...

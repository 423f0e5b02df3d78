"""Load the numbered SQL migrations (top-level `migrations/`, installed as `stord.server.migrations`).

`migrations/<dialect>/NNNN_<what>.sql` are applied in order and recorded in `schema_migrations`; each backend
applies them in its own way (SQLite in its writer thread, PostgreSQL under an advisory lock).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["Migration", "load_migrations"]

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its number, its name and its SQL."""

    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """Return the dialect's migrations in the order they apply; fail on a misnamed or doubled number."""
    folder = resources.files("stord.server.migrations").joinpath(dialect)
    migrations: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise ValueError(f"migration file {entry.name!r} is not named NNNN_<what>.sql")
        migrations.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    migrations.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two {dialect} migrations share a number: {versions}")
    return migrations

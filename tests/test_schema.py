"""A database built from the migrations has exactly the declared schema (backends/tables.py), per dialect.

Compared: the set of tables, and for every declared table its columns (type, NULL or not, PostgreSQL's
collation), its key, its rowid or identity column and its named indexes (columns in order, unique or not).
The event tables belong to the events package, which declares them; here only their names are checked.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import psycopg

from stord.server.backends.postgres import PostgresBackend
from stord.server.backends.sqlite import SqliteBackend
from stord.server.backends.tables import TABLES, Dialect, Table
from stord.server.config import PostgresOptions, SqliteOptions
from tests.harness.postgres import PostgresServer

# Tables checked by name only: the event store, alert evaluation and the page-token key are not (yet) in
# backends/tables.py.
NAME_ONLY_TABLES = {
    "events",
    "event_sessions",
    "event_agents",
    "event_alert_rules",
    "event_alert_history",
    "event_feed_heads",
    "event_feed",
    "alert_evaluations",
    "alert_deliveries",
    "page_token_key",
    "event_rollups",
    "event_rollup_sessions",
}
SQLITE_SEARCH_TABLES = {"events_search", "events_search_config", "events_search_data", "events_search_idx"}
"""SQLite's FTS5 payload search index and its shadow tables (PostgreSQL indexes payloads with pg_trgm)."""


@dataclass(frozen=True)
class Found:
    """A table as the database describes it, in the terms of the declaration."""

    columns: dict[str, tuple[str, bool, bool]]
    """name -> (type, nullable, compares by code point)"""
    key: tuple[str, ...]
    rowid: str | None
    indexes: dict[str, tuple[tuple[str, ...], bool]]
    """named index -> (columns, unique)"""


def declared(table: Table, dialect: Dialect) -> Found:
    return Found(
        columns={
            column.name: (
                column.sqlite if dialect == "sqlite" else column.postgres,
                column.nullable,
                column.code_point and dialect == "postgres",
            )
            for column in table.columns
        },
        key=table.key,
        rowid=table.rowid,
        indexes={
            index.name: (index.columns, index.unique) for index in table.indexes if dialect in index.dialects
        },
    )


def sqlite_table(connection: sqlite3.Connection, table: Table) -> Found:
    info = connection.execute(f"PRAGMA table_info({table.name})").fetchall()
    primary = tuple(row[1] for row in sorted((row for row in info if row[5]), key=lambda row: row[5]))
    # The INTEGER PRIMARY KEY aliases the rowid and is never NULL, though SQLite reports it nullable.
    types = {row[1]: row[2] for row in info}
    rowid = primary[0] if len(primary) == 1 and types[primary[0]] == "INTEGER" else None
    columns = {row[1]: (row[2], not row[3] and row[1] != rowid, False) for row in info}
    named: dict[str, tuple[tuple[str, ...], bool]] = {}
    unique_keys: list[tuple[str, ...]] = []
    for _, name, unique, origin, _partial in connection.execute(f"PRAGMA index_list({table.name})"):
        index_columns = tuple(row[2] for row in connection.execute(f"PRAGMA index_info({name})"))
        if origin == "c":
            named[name] = (index_columns, bool(unique))
        if unique:
            unique_keys.append(index_columns)
    if rowid is None and primary:
        return Found(columns, primary, None, named)
    # A rowid table: the declared key must be a unique index (a UNIQUE constraint or a named one).
    return Found(columns, table.key if table.key in unique_keys else (), rowid, named)


def postgres_table(connection: psycopg.Connection[tuple[object, ...]], table: Table) -> Found:
    columns: dict[str, tuple[str, bool, bool]] = {}
    rowid = None
    for name, type_, not_null, collation, identity in connection.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, co.collname, a.attidentity
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        WHERE n.nspname = 'public' AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
        """,
        (table.name,),
    ):
        columns[str(name)] = (str(type_), not not_null, collation == "C")
        if identity:
            rowid = str(name)
    key: tuple[str, ...] = ()
    named: dict[str, tuple[tuple[str, ...], bool]] = {}
    for name, unique, primary, index_columns in connection.execute(
        """
        SELECT i.relname, x.indisunique, x.indisprimary,
               array(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY AS k(attnum, position)
                     JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                     ORDER BY k.position)
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = 'public' AND t.relname = %s
        """,
        (table.name,),
    ):
        assert isinstance(index_columns, list)
        if primary:
            key = tuple(index_columns)
        else:
            named[str(name)] = (tuple(index_columns), bool(unique))
    return Found(columns, key, rowid, named)


def migrate_sqlite(path: Path) -> None:
    async def migrate() -> None:
        backend = SqliteBackend(path, options=SqliteOptions())
        await backend.open()
        await backend.close()

    asyncio.run(migrate())


def test_sqlite_database_built_from_migrations_matches_the_declared_schema(tmp_path: Path) -> None:
    path = tmp_path / "stord.db"
    migrate_sqlite(path)
    with sqlite3.connect(path) as connection:
        tables = {
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        expected = {table.name for table in TABLES} | NAME_ONLY_TABLES | SQLITE_SEARCH_TABLES
        assert tables == expected | {"schema_migrations"}
        for table in TABLES:
            assert sqlite_table(connection, table) == declared(table, "sqlite"), table.name


def test_postgres_database_built_from_migrations_matches_the_declared_schema(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database("schema_check")

    async def migrate() -> None:
        backend = PostgresBackend(url, options=PostgresOptions())
        await backend.open()
        await backend.close()

    asyncio.run(migrate())
    with psycopg.connect(url) as connection:
        tables = {
            row[0]
            for row in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert tables == {table.name for table in TABLES} | NAME_ONLY_TABLES | {"schema_migrations"}
        for table in TABLES:
            assert postgres_table(connection, table) == declared(table, "postgres"), table.name


def test_a_drifted_declaration_is_noticed(tmp_path: Path) -> None:
    # The comparison itself must be able to fail: a column typed otherwise than the migration made it.
    path = tmp_path / "stord.db"
    migrate_sqlite(path)
    jobs = next(table for table in TABLES if table.name == "jobs")
    changed = declared(jobs, "sqlite")
    changed.columns["priority"] = ("REAL", False, False)
    with sqlite3.connect(path) as connection:
        assert sqlite_table(connection, jobs) != changed
        assert sqlite_table(connection, jobs) == declared(jobs, "sqlite")

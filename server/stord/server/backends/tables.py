"""One typed description per SQL table of the key-value, document, job, agent and manifest contracts.

The migrations create these tables; `tests/test_schema.py` holds a database built from the migrations to
this description on SQLite and PostgreSQL (tables, columns, types, keys, indexes), so the two cannot drift.
The SQL backends' stores, their export and import, and bench name columns through it (`Table.names`), so a
renamed column is one edit here and a type error or a failing schema test, never a query that breaks at run
time. Row mapping stays beside each dialect's store, since the dialects return different Python values
(REAL seconds or timestamptz, JSON text or jsonb). The event tables belong to the events package.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

__all__ = [
    "AGENTS",
    "DOCUMENTS",
    "HANDLER_MANIFESTS",
    "JOBS",
    "KV_LISTS",
    "KV_LIST_ITEMS",
    "KV_VALUES",
    "MANIFEST_DOCUMENTS",
    "MANIFEST_TRANSFORMERS",
    "TABLES",
    "Column",
    "Dialect",
    "Index",
    "Rows",
    "Table",
]

Dialect = Literal["sqlite", "postgres"]
BOTH: tuple[Dialect, ...] = ("sqlite", "postgres")


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its declared type in each dialect, whether it may be NULL, how PostgreSQL orders text."""

    name: str
    sqlite: str
    """The declared type as SQLite reports it: TEXT, INTEGER, REAL or BLOB."""
    postgres: str
    """The type as PostgreSQL's `format_type` spells it (`bigint`, `timestamp with time zone`, ...)."""
    nullable: bool = False
    code_point: bool = False
    """PostgreSQL: `COLLATE "C"`, so that ORDER BY and range scans compare by code point, as SQLite does."""


@dataclass(frozen=True, slots=True)
class Index:
    """A named index of a migration (not the ones keys create), and the dialects that have it."""

    name: str
    columns: tuple[str, ...]
    unique: bool = False
    dialects: tuple[Dialect, ...] = BOTH


@dataclass(frozen=True, slots=True)
class Table:
    """A table: its columns in record order (the order stores select and insert them), key and indexes."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    """What identifies a row: the primary key, or on SQLite, where `rowid` is set, a unique index."""
    indexes: tuple[Index, ...] = ()
    rowid: str | None = None
    """A number column that orders rows: SQLite's INTEGER PRIMARY KEY (the rowid), PostgreSQL's identity."""

    def names(
        self,
        *,
        skip: Collection[str] = ("namespace",),
        prefix: str = "",
        cast: Mapping[str, str] | None = None,
    ) -> str:
        """Return the columns, but `skip`, in record order as a select or insert list.

        `prefix` qualifies each name (`jobs.`); `cast` appends a cast to some (`{"data": "::text"}`).
        """
        casts = cast or {}
        for name in (*skip, *casts):
            self.column(name)  # a typo is an error here, not a query that fails later
        return ", ".join(
            f"{prefix}{column.name}{casts.get(column.name, '')}"
            for column in self.columns
            if column.name not in skip
        )

    def insert(self, placeholder: str, *, cast: Mapping[str, str] | None = None, clause: str = "") -> str:
        """Return an INSERT of every column in record order, one positional `placeholder` each.

        `cast` appends a cast to some values (`{"data": "::jsonb"}`); `clause` goes before VALUES
        (`OVERRIDING SYSTEM VALUE`).
        """
        casts = cast or {}
        values = ", ".join(f"{placeholder}{casts.get(column.name, '')}" for column in self.columns)
        before_values = f" {clause}" if clause else ""
        return f"INSERT INTO {self.name} ({self.names(skip=())}){before_values} VALUES ({values})"

    def column(self, name: str) -> Column:
        """Return the column called `name`; raise KeyError when the table has none."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no column {name!r}")


_T_co = TypeVar("_T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Rows(Generic[_T_co]):
    """How one dialect's store reads a table: the select list, and the function making a row a value."""

    columns: str
    read: Callable[[Sequence[Any]], _T_co]


def _text(name: str, *, nullable: bool = False, code_point: bool = True) -> Column:
    return Column(name, "TEXT", "text", nullable, code_point)


def _time(name: str, *, nullable: bool = False) -> Column:
    """A moment: REAL seconds since the epoch on SQLite, timestamptz on PostgreSQL."""
    return Column(name, "REAL", "timestamp with time zone", nullable)


def _micros(name: str, *, nullable: bool = False) -> Column:
    """A moment as integer microseconds since the epoch (jobs: exact at both ends of a Timestamp's range)."""
    return Column(name, "INTEGER", "bigint", nullable)


def _json(name: str, *, nullable: bool = False) -> Column:
    """A JSON value: its text on SQLite, jsonb on PostgreSQL."""
    return Column(name, "TEXT", "jsonb", nullable)


_NAMESPACE = _text("namespace")
_KEYSPACE = _text("keyspace", code_point=False)

KV_VALUES = Table(
    "kv_values",
    (
        _KEYSPACE,
        _NAMESPACE,
        _text("key"),
        Column("value", "BLOB", "bytea"),
        _time("expires_at", nullable=True),
    ),
    key=("keyspace", "namespace", "key"),
    indexes=(Index("kv_values_expiry", ("expires_at",)),),
)

KV_LISTS = Table(
    "kv_lists",
    (_KEYSPACE, _NAMESPACE, _text("key"), Column("length", "INTEGER", "bigint")),
    key=("keyspace", "namespace", "key"),
)

KV_LIST_ITEMS = Table(
    "kv_list_items",
    (
        _KEYSPACE,
        _NAMESPACE,
        _text("key"),
        Column("position", "INTEGER", "bigint"),
        Column("value", "BLOB", "bytea"),
    ),
    key=("keyspace", "namespace", "key", "position"),
)

DOCUMENTS = Table(
    "documents",
    (
        _NAMESPACE,
        _text("collection"),
        _text("id"),
        Column("revision", "INTEGER", "bigint"),
        _time("create_time"),
        _time("update_time"),
        _json("data"),
    ),
    key=("namespace", "collection", "id"),
)

JOBS = Table(
    "jobs",
    (
        _NAMESPACE,
        Column("sequence", "INTEGER", "bigint"),
        _text("id"),
        _text("queue"),
        _text("status", code_point=False),
        Column("priority", "INTEGER", "integer"),
        _micros("run_at"),
        Column("attempts", "INTEGER", "integer"),
        Column("max_attempts", "INTEGER", "integer"),
        _text("dedupe_key", nullable=True, code_point=False),
        _json("payload"),
        _text("last_error", nullable=True, code_point=False),
        _text("lease_token", nullable=True, code_point=False),
        _micros("lease_expires_at", nullable=True),
        _micros("create_time"),
        _micros("update_time"),
    ),
    key=("namespace", "id"),
    rowid="sequence",
    indexes=(
        Index("jobs_by_id", ("namespace", "id"), unique=True, dialects=("sqlite",)),
        Index("jobs_waiting", ("namespace", "queue", "priority", "run_at", "sequence")),
        Index("jobs_leased", ("namespace", "queue", "lease_expires_at")),
        Index("jobs_dedupe", ("namespace", "queue", "dedupe_key"), unique=True),
        Index("jobs_by_status", ("namespace", "queue", "status", "sequence")),
        Index("jobs_lapsing", ("lease_expires_at",)),
        Index("jobs_finished", ("status", "update_time")),
    ),
)

AGENTS = Table(
    "agents",
    (
        _NAMESPACE,
        Column("position", "INTEGER", "bigint"),
        _text("uri"),
        _text("name", code_point=False),
        _text("version", code_point=False),
        _text("status", code_point=False),
        _text("visibility", code_point=False),
        _text("owner", code_point=False),
        _json("configuration", nullable=True),
        Column("update_time", "REAL", "double precision"),
        _text("name_folded", code_point=False),
        _text("configuration_folded", code_point=False),
    ),
    key=("namespace", "uri"),
    rowid="position",
    indexes=(
        # PostgreSQL's positions come from an identity, so nothing else keeps them unique there.
        Index("agents_in_order", ("namespace", "position"), dialects=("sqlite",)),
        Index("agents_in_order", ("namespace", "position"), unique=True, dialects=("postgres",)),
    ),
)

HANDLER_MANIFESTS = Table(
    "handler_manifests",
    (
        _NAMESPACE,
        _text("handler_id"),
        _text("version"),
        Column("created_seconds", "INTEGER", "bigint"),
        Column("created_nanos", "INTEGER", "integer"),
        _json("document"),
    ),
    key=("namespace", "handler_id", "version"),
    indexes=(
        Index(
            "handler_manifests_by_time",
            ("namespace", "handler_id", "created_seconds", "created_nanos", "version"),
        ),
    ),
)

MANIFEST_TRANSFORMERS = Table(
    "manifest_transformers",
    (
        _NAMESPACE,
        _text("id"),
        _text("handler_id"),
        _text("from_version"),
        _text("to_version"),
        _json("document"),
    ),
    key=("namespace", "id"),
    indexes=(
        Index(
            "manifest_transformers_by_versions",
            ("namespace", "handler_id", "from_version", "to_version", "id"),
        ),
    ),
)

MANIFEST_DOCUMENTS = Table(
    "manifest_documents",
    (_NAMESPACE, _text("kind", code_point=False), _text("id"), _text("version"), _json("document")),
    key=("namespace", "kind", "id", "version"),
)

TABLES = (
    KV_VALUES,
    KV_LISTS,
    KV_LIST_ITEMS,
    DOCUMENTS,
    JOBS,
    AGENTS,
    HANDLER_MANIFESTS,
    MANIFEST_TRANSFORMERS,
    MANIFEST_DOCUMENTS,
)
"""Every table described here, in migration order."""

"""What the SQL backends' dump and restore share: the statements, derived columns, numbering, error texts.

Both dialects keep every contract's rows in the same tables with a `namespace` column (the key-value ones
also keyed by `keyspace`), and each store module exports how it reads its table (`tables.Rows`), so one
builder writes the dump's statements for both. A restore checks or empties a namespace table by table, and
computes again what a backend derives when it writes (an event's analytics facts): the export format
carries only what is stored.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stord.server.agents.port import StoredAgent
from stord.server.agents.search import configuration_text, fold
from stord.server.backends import _event_sql
from stord.server.backends._manifest_sql import manifest_rows, transformer_rows
from stord.server.backends._sql import SqlDialect
from stord.server.backends.tables import (
    HANDLER_MANIFESTS,
    KV_LIST_ITEMS,
    KV_VALUES,
    MANIFEST_DOCUMENTS,
    MANIFEST_TRANSFORMERS,
    Rows,
)
from stord.server.documents.port import Document
from stord.server.events.model import payload_facts
from stord.server.events.port import AlertHistoryEntry, AlertRule, Event, EventAgent, Session
from stord.server.jobs.port import Job
from stord.server.kv.port import Keyspace
from stord.server.manifests.port import HandlerManifestRecord, ManifestDocumentKind, TransformerRecord
from stord.server.ports import InvalidArgument, JsonObject, NamespaceOccupied
from stord.server.transfer.port import (
    AgentRecord,
    AlertHistoryRecord,
    AlertRuleRecord,
    DocumentRecord,
    EventAgentRecord,
    EventRecord,
    JobRecord,
    ListItemRecord,
    ManifestDocumentRecord,
    ManifestRecord,
    ManifestTransformerRecord,
    SessionRecord,
    TransferRecord,
    ValueRecord,
)

__all__ = [
    "DUMP_BATCH",
    "KEYED_TABLES",
    "KEYSPACES",
    "NAMESPACE_TABLES",
    "Dump",
    "DumpSources",
    "NamespaceGate",
    "TransferDialect",
    "count_statements",
    "deletion_statements",
    "dump_statements",
    "event_facts",
    "list_lengths",
    "namespace_condition",
    "number_shift",
    "occupancy_statements",
    "occupied",
    "repeated_record",
]

DUMP_BATCH = 1000
"""Records per batch a dump yields: large enough to amortize a hand-over, small enough to stream."""

KEYED_TABLES = ("kv_values", "kv_lists", "kv_list_items")
"""Tables whose primary key starts with `keyspace`, then `namespace`."""

NAMESPACE_TABLES = (
    *KEYED_TABLES,
    "documents",
    "jobs",
    "events",
    "event_sessions",
    "event_agents",
    "event_alert_rules",
    "event_alert_history",
    "agents",
    "handler_manifests",
    "manifest_transformers",
    "manifest_documents",
)
"""Every table that holds a namespace's data, in both dialects."""

KEYSPACES = tuple(keyspace.value for keyspace in Keyspace)


Row = Sequence[Any]

Dump = tuple[str, Callable[[Row], TransferRecord]]
"""What a dump selects from one table, and how a row becomes a record."""


@dataclass(frozen=True, slots=True)
class TransferDialect:
    """What differs between the SQL dialects' dumps and restores."""

    parameter: Callable[[str], str]
    """The placeholder of a named parameter: `:name` or `%(name)s`."""
    seconds: Callable[[Any], float | None]
    """The seconds since the epoch of a stored expiry (a REAL, or a timestamptz)."""
    document: Callable[[Any], JsonObject]
    """The object of a stored manifest document (JSON text, or jsonb)."""
    code_point_order: str
    """What makes an ORDER BY term on text without a collation of its own compare by code point."""


@dataclass(frozen=True, slots=True)
class DumpSources:
    """How one SQL backend reads each table a dump selects (after its namespace column)."""

    document: Rows[Document]
    job: Rows[Job]
    event: Rows[Event]
    session: Rows[Session]
    event_agent: Rows[EventAgent]
    alert_rule: Rows[AlertRule]
    alert_entry: Rows[AlertHistoryEntry]
    agent: Rows[StoredAgent]
    manifest: Rows[HandlerManifestRecord]
    transformer: Rows[TransformerRecord]


def dump_sources(
    events: _event_sql.Dialect,
    dialect: SqlDialect,
    *,
    document: Rows[Document],
    job: Rows[Job],
    agent: Rows[StoredAgent],
) -> DumpSources:
    """Return a SQL backend's sources: its own readers of documents, jobs and agents; the event store's and
    the manifest store's tables are read alike but for the dialects."""
    return DumpSources(
        document=document,
        job=job,
        event=Rows(_event_sql.EVENT_COLUMNS, _event_sql.read_event),
        session=Rows(_event_sql.SESSION_COLUMNS, functools.partial(_event_sql.read_session, events)),
        event_agent=Rows(_event_sql.AGENT_COLUMNS, _event_sql.read_agent),
        alert_rule=Rows(_event_sql.RULE_COLUMNS, functools.partial(_event_sql.read_rule, events)),
        alert_entry=Rows(_event_sql.HISTORY_COLUMNS, _event_sql.read_entry),
        agent=agent,
        manifest=manifest_rows(dialect),
        transformer=transformer_rows(dialect),
    )


def dump_statements(dialect: TransferDialect, namespace: str | None, sources: DumpSources) -> list[Dump]:
    """Return what a dump selects, table by table, in key order, and how each row becomes a record.

    The statements take the parameters `now` and `namespace`.
    """
    where = "" if namespace is None else f"WHERE namespace = {dialect.parameter('namespace')}"
    live = f"(expires_at IS NULL OR expires_at > {dialect.parameter('now')})"
    return [
        (
            "SELECT namespace, keyspace, key, value, expires_at FROM kv_values"
            f" WHERE {live} {where.replace('WHERE', 'AND')} ORDER BY keyspace, namespace, key",
            lambda row: ValueRecord(row[0], Keyspace(row[1]), row[2], bytes(row[3]), dialect.seconds(row[4])),
        ),
        (
            f"SELECT namespace, keyspace, key, position, value FROM kv_list_items {where}"
            " ORDER BY keyspace, namespace, key, position",
            lambda row: ListItemRecord(row[0], Keyspace(row[1]), row[2], row[3], bytes(row[4])),
        ),
        (
            f"SELECT namespace, {sources.document.columns} FROM documents {where}"
            " ORDER BY namespace, collection, id",
            lambda row: DocumentRecord(row[0], sources.document.read(row[1:])),
        ),
        (
            f"SELECT jobs.namespace, {sources.job.columns} FROM jobs {where} ORDER BY namespace, sequence",
            lambda row: JobRecord(row[0], sources.job.read(row[1:])),
        ),
        (
            f"SELECT namespace, {sources.event.columns} FROM events {where} ORDER BY namespace, id",
            lambda row: EventRecord(row[0], sources.event.read(row[1:])),
        ),
        (
            f"SELECT namespace, {sources.session.columns}, chain_length, last_hash"
            f" FROM event_sessions {where} ORDER BY namespace, id",
            lambda row: SessionRecord(row[0], sources.session.read(row[1:-2]), row[-2], row[-1]),
        ),
        (
            f"SELECT namespace, {sources.event_agent.columns} FROM event_agents {where}"
            " ORDER BY namespace, id",
            lambda row: EventAgentRecord(row[0], sources.event_agent.read(row[1:])),
        ),
        (
            f"SELECT namespace, {sources.alert_rule.columns} FROM event_alert_rules {where}"
            " ORDER BY namespace, id",
            lambda row: AlertRuleRecord(row[0], sources.alert_rule.read(row[1:])),
        ),
        (
            f"SELECT namespace, {sources.alert_entry.columns} FROM event_alert_history {where}"
            " ORDER BY namespace, id",
            lambda row: AlertHistoryRecord(row[0], sources.alert_entry.read(row[1:])),
        ),
        (
            f"SELECT namespace, {sources.agent.columns} FROM agents {where} ORDER BY namespace, position",
            lambda row: AgentRecord(row[0], sources.agent.read(row[1:]), row[1]),
        ),
        (
            f"SELECT namespace, {sources.manifest.columns} FROM handler_manifests {where}"
            " ORDER BY namespace, handler_id, version",
            lambda row: ManifestRecord(row[0], sources.manifest.read(row[1:])),
        ),
        (
            f"SELECT namespace, {sources.transformer.columns} FROM manifest_transformers {where}"
            " ORDER BY namespace, id",
            lambda row: ManifestTransformerRecord(row[0], sources.transformer.read(row[1:])),
        ),
        (
            f"SELECT namespace, kind, id, version, document FROM manifest_documents {where}"
            f" ORDER BY namespace, kind{dialect.code_point_order}, id, version",
            lambda row: ManifestDocumentRecord(
                row[0], ManifestDocumentKind(row[1]), (row[2], row[3]), dialect.document(row[4])
            ),
        ),
    ]


def namespace_condition(dialect: TransferDialect, table: str) -> str:
    """Return the WHERE condition of one namespace's rows of `table`, its name the parameter `namespace`."""
    if table in KEYED_TABLES:
        # The primary key starts with keyspace: naming the keyspaces lets the index find the namespace.
        keyspaces = ", ".join(f"'{keyspace}'" for keyspace in KEYSPACES)
        return f"keyspace IN ({keyspaces}) AND namespace = {dialect.parameter('namespace')}"
    return f"namespace = {dialect.parameter('namespace')}"


def count_statements(dialect: TransferDialect, namespace: str | None) -> list[str]:
    """Return the statements counting what a dump of `namespace` (None: all) yields, table by table."""
    return [
        f"SELECT count(*) FROM {table}"
        + ("" if namespace is None else f" WHERE {namespace_condition(dialect, table)}")
        for table in NAMESPACE_TABLES
        if table != "kv_lists"  # a list's records are its items
    ]


def occupancy_statements(dialect: TransferDialect) -> list[tuple[str, str]]:
    """Return, table by table, the statement finding a row of the namespace (parameter `namespace`)."""
    return [
        (table, f"SELECT 1 FROM {table} WHERE {namespace_condition(dialect, table)} LIMIT 1")
        for table in NAMESPACE_TABLES
    ]


def deletion_statements(dialect: TransferDialect) -> list[str]:
    """Return the statements deleting everything of the namespace (parameter `namespace`)."""
    return [f"DELETE FROM {table} WHERE {namespace_condition(dialect, table)}" for table in NAMESPACE_TABLES]


def event_facts(event: Event) -> tuple[float | None, float | None]:
    """Return the (cost_usd, latency_ms) columns of an event, read from its payload as ingest reads them."""
    facts = payload_facts(event.event_type, orjson.loads(event.payload))
    return facts.get("cost_usd"), facts.get("latency_ms")


_NANOS = 1_000_000_000


Values = Sequence[object] | dict[str, object]
"""The parameters of one INSERT: positional, or named."""


@dataclass(frozen=True)
class RowWriter:
    """How one SQL dialect takes the values of a restored record where the dialects differ."""

    instant: Callable[[float], object]
    """A moment in float seconds (key-value expiry, document times)."""
    json: Callable[[JsonObject], object]
    """A JSON object (manifests and their documents)."""
    configuration: Callable[[JsonObject], object]
    """An agent's configuration, which the agents table keeps in its own form."""
    texts: Callable[[Sequence[str]], object]
    """A list of strings (a session's tags)."""
    rule: Callable[[str, AlertRule], Values]
    """An alert rule's values after its namespace."""


def insert_statements(
    placeholder: str, *, document: str, job: str, session: str, rule: str, agent: str, event: str | None
) -> dict[type[TransferRecord], str]:
    """Return the INSERT of each kind of record a restore writes: the ones the dialect shapes (casts, identity
    clauses, arrays, named parameters) as given, the others built here with `placeholder`; without `event`,
    events go in another way (PostgreSQL's COPY)."""

    def values(count: int) -> str:
        return ", ".join([placeholder] * count)

    inserts: dict[type[TransferRecord], str] = {
        ValueRecord: KV_VALUES.insert(placeholder),
        ListItemRecord: KV_LIST_ITEMS.insert(placeholder),
        DocumentRecord: document,
        JobRecord: job,
        SessionRecord: session,
        EventAgentRecord: (
            f"INSERT INTO event_agents (namespace, {_event_sql.AGENT_COLUMNS}) VALUES ({values(7)})"
        ),
        AlertRuleRecord: rule,
        AlertHistoryRecord: (
            f"INSERT INTO event_alert_history (namespace, {_event_sql.HISTORY_COLUMNS}) VALUES ({values(8)})"
        ),
        AgentRecord: agent,
        ManifestRecord: HANDLER_MANIFESTS.insert(placeholder),
        ManifestTransformerRecord: MANIFEST_TRANSFORMERS.insert(placeholder),
        ManifestDocumentRecord: MANIFEST_DOCUMENTS.insert(placeholder),
    }
    if event is not None:
        inserts[EventRecord] = event
    return inserts


def event_values(record: EventRecord) -> tuple[object, ...]:
    """The columns of a restored event, its namespace first (an INSERT or a COPY row alike)."""
    e = record.event
    cost_usd, latency_ms = event_facts(e)
    return (
        record.namespace, e.id, e.timestamp, e.session_id, e.agent_id, e.event_type.value, e.severity.value,
        e.payload, e.metadata, e.prev_hash, e.hash, e.chain_index, cost_usd, latency_ms,
    )  # fmt: skip


def record_values(record: TransferRecord, writer: RowWriter, *, job_shift: int, agent_shift: int) -> Values:
    """Return the values a restore inserts for `record` into its table, copied job sequences and agent
    positions shifted by `job_shift` and `agent_shift`."""
    namespace = record.namespace
    if isinstance(record, EventRecord):
        return event_values(record)
    if isinstance(record, ValueRecord):
        expires_at = None if record.expires_at is None else writer.instant(record.expires_at)
        return (record.keyspace.value, namespace, record.key, record.value, expires_at)
    if isinstance(record, ListItemRecord):
        return (record.keyspace.value, namespace, record.key, record.position, record.value)
    if isinstance(record, DocumentRecord):
        d = record.document
        return (
            namespace, d.collection, d.id, d.revision, writer.instant(d.create_time),
            writer.instant(d.update_time), orjson.dumps(d.data).decode(),
        )  # fmt: skip
    if isinstance(record, JobRecord):
        j = record.job
        return (
            namespace, j.sequence + job_shift, j.id, j.queue, j.status.value, j.priority, j.run_at,
            j.attempts, j.max_attempts, j.dedupe_key, orjson.dumps(j.payload).decode(), j.last_error,
            j.lease_token, j.lease_expires_at, j.create_time, j.update_time,
        )  # fmt: skip
    if isinstance(record, SessionRecord):
        s = record.session
        return (
            namespace, s.id, s.agent_id, s.agent_name, s.started_at, s.ended_at, s.status.value,
            s.event_count, s.tool_call_count, s.error_count, s.total_cost_usd, writer.texts(s.tags),
            record.chain_length, record.last_hash,
        )  # fmt: skip
    if isinstance(record, EventAgentRecord):
        a = record.agent
        return (namespace, a.id, a.name, a.description, a.first_seen_at, a.last_seen_at, a.session_count)
    if isinstance(record, AlertRuleRecord):
        return writer.rule(namespace, record.rule)
    if isinstance(record, AlertHistoryRecord):
        e = record.entry
        return (
            namespace,
            e.id,
            e.rule_id,
            e.triggered_at,
            e.resolved_at,
            e.current_value,
            e.threshold,
            e.message,
        )
    if isinstance(record, AgentRecord):
        agent = record.agent
        configuration = agent.configuration
        return (
            namespace, record.position + agent_shift, agent.uri, agent.name, agent.version,
            agent.status.value, agent.visibility.value, agent.owner,
            None if configuration is None else writer.configuration(configuration), agent.update_time,
            fold(agent.name), fold(configuration_text(configuration)),
        )  # fmt: skip
    if isinstance(record, ManifestRecord):
        m = record.manifest
        seconds, nanos = divmod(m.created_at, _NANOS)
        return (namespace, m.handler_id, m.version, seconds, nanos, writer.json(m.document))
    if isinstance(record, ManifestTransformerRecord):
        t = record.transformer
        return (namespace, t.id, t.handler_id, t.from_version, t.to_version, writer.json(t.document))
    assert isinstance(record, ManifestDocumentRecord), record
    key_id, version = record.key
    return (namespace, record.kind.value, key_id, version, writer.json(record.document))


def number_shift(greatest: int | None) -> int:
    """Return how far to shift the copied job sequences (agent positions) past the table's `greatest`.

    Numbers are copied as they are into a table that holds none (a new database, or namespaces replaced),
    which keeps page tokens valid; into one holding others they go after the greatest, in the same order.
    Either way every number stays unique in its table, as the SQLite backend needs (they are its rowids).
    """
    return greatest or 0


def list_lengths(records: Iterable[TransferRecord]) -> dict[tuple[str, str, str], int]:
    """Return, per (keyspace, namespace, key), the list length the batch's items make at least."""
    lengths: dict[tuple[str, str, str], int] = {}
    for record in records:
        if isinstance(record, ListItemRecord):
            list_key = (record.keyspace.value, record.namespace, record.key)
            lengths[list_key] = max(lengths.get(list_key, 0), record.position + 1)
    return lengths


def occupied(namespace: str, tables: Sequence[str]) -> NamespaceOccupied:
    """Return the error for importing into a namespace that holds data in `tables`."""
    return NamespaceOccupied(
        namespace,
        f"namespace {namespace!r} of the target holds data already ({', '.join(tables)}); an import never"
        " merges: import into an empty namespace, or pass --replace to delete what it holds first",
    )


def repeated_record(error: Exception) -> InvalidArgument:
    """Return the error for a record whose key a record before it had already (a corrupt or doubled file)."""
    return InvalidArgument("input", f"a record repeats the key of one written before it: {error}")


class NamespaceGate:
    """Remembers which namespaces a restore has checked (or emptied) already."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def new_namespaces(self, records: Sequence[TransferRecord]) -> list[str]:
        """Return the namespaces of `records` not seen before, in order of appearance, and mark them seen."""
        fresh: list[str] = []
        for record in records:
            if record.namespace not in self._seen:
                self._seen.add(record.namespace)
                fresh.append(record.namespace)
        return fresh

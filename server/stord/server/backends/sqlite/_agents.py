"""The agent registry (DESIGN 4.5) over `agents` in migrations/sqlite/0004_agents_manifests.sql."""

from __future__ import annotations

import dataclasses
import functools
import json
import sqlite3

from stord.server.agents.port import AgentMatch, AgentWrite, StoredAgent, not_owner
from stord.server.agents.search import configuration_text, fold
from stord.server.backends._rows import read_stored_agent
from stord.server.backends.sqlite._engine import SqliteEngine
from stord.server.backends.tables import AGENTS, Rows
from stord.server.ports import Clock

__all__ = ["SqliteAgentStore"]

_COLUMNS = AGENTS.names(skip=("namespace", "name_folded", "configuration_folded"))

_GET = f"SELECT {_COLUMNS} FROM agents WHERE namespace = :namespace AND uri = :uri"

_OWNER = "SELECT owner FROM agents WHERE namespace = :namespace AND uri = :uri"

# The writer thread is the only writer, so reading the owner first and then writing is not a race.
_UPSERT = """
INSERT INTO agents (
    namespace, uri, name, version, status, visibility, owner, configuration, update_time,
    name_folded, configuration_folded
) VALUES (
    :namespace, :uri, :name, :version, :status, :visibility, :owner, :configuration, :update_time,
    :name_folded, :configuration_folded
)
ON CONFLICT (namespace, uri) DO UPDATE SET
    name = excluded.name, version = excluded.version, status = excluded.status,
    visibility = excluded.visibility, owner = excluded.owner, configuration = excluded.configuration,
    update_time = excluded.update_time, name_folded = excluded.name_folded,
    configuration_folded = excluded.configuration_folded
"""

_DELETE = "DELETE FROM agents WHERE namespace = :namespace AND uri = :uri"

# instr() is a plain substring search: no character of the query is special.
_MATCHES = """
(:query = '' OR uri = :query OR instr(name_folded, :folded) > 0 OR instr(configuration_folded, :folded) > 0)
"""
_SEARCH = f"""
SELECT {_COLUMNS} FROM agents
WHERE namespace = :namespace AND position > :after
  AND (visibility = 'public' OR owner = :principal)
  AND {_MATCHES}
ORDER BY position
LIMIT :limit
"""


_agent_of = functools.partial(read_stored_agent, lambda text: None if text is None else json.loads(text))


class SqliteAgentStore:
    """Agents in one table; writes on the engine's writer thread, lookups inline, searches on the readers."""

    def __init__(self, engine: SqliteEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def get(self, namespace: str, uri: str) -> StoredAgent | None:
        parameters = {"namespace": namespace, "uri": uri}

        def run(connection: sqlite3.Connection) -> StoredAgent | None:
            row = connection.execute(_GET, parameters).fetchone()
            return None if row is None else _agent_of(row)

        return await self._engine.lookup(run)

    async def set(self, namespace: str, agent: StoredAgent) -> AgentWrite:
        stored = dataclasses.replace(agent, update_time=self._clock())
        configuration = configuration_text(stored.configuration)
        parameters = {
            "namespace": namespace,
            "uri": stored.uri,
            "name": stored.name,
            "version": stored.version,
            "status": stored.status.value,
            "visibility": stored.visibility.value,
            "owner": stored.owner,
            "configuration": configuration if stored.configuration is not None else None,
            "update_time": stored.update_time,
            "name_folded": fold(stored.name),
            "configuration_folded": fold(configuration),
        }

        def run(connection: sqlite3.Connection) -> AgentWrite:
            row = connection.execute(_OWNER, parameters).fetchone()
            if row is not None and row[0] not in ("", stored.owner):
                raise not_owner(stored.uri)
            connection.execute(_UPSERT, parameters)
            return AgentWrite(stored, created=row is None)

        return await self._engine.write(run)

    async def delete(self, namespace: str, uri: str, *, principal: str) -> bool:
        parameters = {"namespace": namespace, "uri": uri}

        def run(connection: sqlite3.Connection) -> bool:
            row = connection.execute(_OWNER, parameters).fetchone()
            if row is None:
                return False
            if row[0] not in ("", principal):
                raise not_owner(uri)
            connection.execute(_DELETE, parameters)
            return True

        return await self._engine.write(run)

    async def search(
        self, namespace: str, query: str, *, principal: str, after: int | None, limit: int
    ) -> list[AgentMatch]:
        parameters = {
            "namespace": namespace,
            "after": 0 if after is None else after,  # positions start at 1
            "principal": principal,
            "query": query,
            "folded": fold(query),
            "limit": limit,
        }

        def run(connection: sqlite3.Connection) -> list[AgentMatch]:
            rows = connection.execute(_SEARCH, parameters).fetchall()
            return [AgentMatch(row[0], _agent_of(row)) for row in rows]

        return await self._engine.read(run)


AGENT_ROWS = Rows(_COLUMNS, _agent_of)
"""How export reads the agents table (after its namespace column)."""

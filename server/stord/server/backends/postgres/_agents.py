"""The agent registry (DESIGN 4.5) over `agents` in migrations/postgres/0004_agents_manifests.sql."""

from __future__ import annotations

import dataclasses
import functools

from psycopg.types.json import Jsonb

from stord.server.agents.port import AgentMatch, AgentWrite, StoredAgent, not_owner
from stord.server.agents.search import configuration_text, fold
from stord.server.backends._rows import read_stored_agent
from stord.server.backends.postgres._pool import Pool
from stord.server.backends.tables import AGENTS, Rows
from stord.server.ports import Clock

__all__ = ["PostgresAgentStore"]

_COLUMNS = AGENTS.names(skip=("namespace", "name_folded", "configuration_folded"))

_GET = f"SELECT {_COLUMNS} FROM agents WHERE namespace = %(namespace)s AND uri = %(uri)s"

# The conflict locks the existing row and the WHERE decides on its latest version, so the ownership check
# and the write are one atomic step even with several daemons. xmax is 0 only on a freshly inserted row.
_UPSERT = """
INSERT INTO agents AS old (
    namespace, uri, name, version, status, visibility, owner, configuration, update_time,
    name_folded, configuration_folded
) VALUES (
    %(namespace)s, %(uri)s, %(name)s, %(version)s, %(status)s, %(visibility)s, %(owner)s,
    %(configuration)s, %(update_time)s, %(name_folded)s, %(configuration_folded)s
)
ON CONFLICT (namespace, uri) DO UPDATE SET
    name = excluded.name, version = excluded.version, status = excluded.status,
    visibility = excluded.visibility, owner = excluded.owner, configuration = excluded.configuration,
    update_time = excluded.update_time, name_folded = excluded.name_folded,
    configuration_folded = excluded.configuration_folded
WHERE old.owner = '' OR old.owner = excluded.owner
RETURNING xmax = 0
"""

_DELETE = """
DELETE FROM agents
WHERE namespace = %(namespace)s AND uri = %(uri)s AND (owner = '' OR owner = %(principal)s)
RETURNING true
"""

_EXISTS = "SELECT true FROM agents WHERE namespace = %(namespace)s AND uri = %(uri)s"

# strpos() is a plain substring search: no character of the query is special.
_SEARCH = f"""
SELECT {_COLUMNS} FROM agents
WHERE namespace = %(namespace)s AND position > %(after)s
  AND (visibility = 'public' OR owner = %(principal)s)
  AND (%(query)s = '' OR uri = %(query)s
       OR strpos(name_folded, %(folded)s) > 0 OR strpos(configuration_folded, %(folded)s) > 0)
ORDER BY position
LIMIT %(limit)s
"""


_agent_of = functools.partial(read_stored_agent, lambda configuration: configuration)  # jsonb: decoded


class PostgresAgentStore:
    """Agents in one table; every operation is one statement (delete's explanation aside)."""

    def __init__(self, pool: Pool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock

    async def get(self, namespace: str, uri: str) -> StoredAgent | None:
        async with self._pool.connection() as connection:
            cursor = await connection.execute(_GET, {"namespace": namespace, "uri": uri})
            row = await cursor.fetchone()
        return None if row is None else _agent_of(row)

    async def set(self, namespace: str, agent: StoredAgent) -> AgentWrite:
        stored = dataclasses.replace(agent, update_time=self._clock())
        configuration = stored.configuration
        params = {
            "namespace": namespace,
            "uri": stored.uri,
            "name": stored.name,
            "version": stored.version,
            "status": stored.status.value,
            "visibility": stored.visibility.value,
            "owner": stored.owner,
            "configuration": None if configuration is None else Jsonb(configuration),
            "update_time": stored.update_time,
            "name_folded": fold(stored.name),
            "configuration_folded": fold(configuration_text(configuration)),
        }
        async with self._pool.connection() as connection:
            row = await (await connection.execute(_UPSERT, params)).fetchone()
        if row is None:  # the WHERE refused: someone else owns the agent
            raise not_owner(stored.uri)
        return AgentWrite(stored, created=bool(row[0]))

    async def delete(self, namespace: str, uri: str, *, principal: str) -> bool:
        params = {"namespace": namespace, "uri": uri, "principal": principal}
        async with self._pool.connection() as connection:
            if await (await connection.execute(_DELETE, params)).fetchone() is not None:
                return True
            # Nothing deleted: tell a missing agent from someone else's.
            exists = await (await connection.execute(_EXISTS, params)).fetchone() is not None
        if exists:
            raise not_owner(uri)
        return False

    async def search(
        self, namespace: str, query: str, *, principal: str, after: int | None, limit: int
    ) -> list[AgentMatch]:
        params = {
            "namespace": namespace,
            "after": 0 if after is None else after,  # identity positions start at 1
            "principal": principal,
            "query": query,
            "folded": fold(query),
            "limit": limit,
        }
        async with self._pool.connection() as connection:
            rows = await (await connection.execute(_SEARCH, params)).fetchall()
        return [AgentMatch(row[0], _agent_of(row)) for row in rows]


AGENT_ROWS = Rows(_COLUMNS, _agent_of)
"""How export reads the agents table (after its namespace column)."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from stord.server.agents.port import AgentMatch, AgentWrite, StoredAgent, not_owner
from stord.server.agents.search import matches
from stord.server.ports import Clock

# Every method runs to completion without awaiting, so each is atomic on the event loop and needs no lock.


@dataclass(frozen=True, slots=True)
class _Entry:
    position: int
    agent: StoredAgent


class MemoryAgentStore:
    """Agents in one dict per namespace; a dict keeps insertion order, and replacing a key keeps its place."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._namespaces: dict[str, dict[str, _Entry]] = {}
        self._positions = itertools.count(1)

    async def get(self, namespace: str, uri: str) -> StoredAgent | None:
        entry = self._namespaces.get(namespace, {}).get(uri)
        return None if entry is None else entry.agent

    async def set(self, namespace: str, agent: StoredAgent) -> AgentWrite:
        agents = self._namespaces.setdefault(namespace, {})
        stored = dataclasses.replace(agent, update_time=self._clock())
        existing = agents.get(stored.uri)
        if existing is None:
            agents[stored.uri] = _Entry(next(self._positions), stored)
            return AgentWrite(stored, created=True)
        if existing.agent.owner not in ("", stored.owner):
            raise not_owner(stored.uri)
        agents[stored.uri] = _Entry(existing.position, stored)
        return AgentWrite(stored, created=False)

    async def delete(self, namespace: str, uri: str, *, principal: str) -> bool:
        agents = self._namespaces.get(namespace, {})
        existing = agents.get(uri)
        if existing is None:
            return False
        if existing.agent.owner not in ("", principal):
            raise not_owner(uri)
        del agents[uri]
        if not agents:
            del self._namespaces[namespace]
        return True

    async def search(
        self, namespace: str, query: str, *, principal: str, after: int | None, limit: int
    ) -> list[AgentMatch]:
        found: list[AgentMatch] = []
        for entry in self._namespaces.get(namespace, {}).values():
            if after is not None and entry.position <= after:
                continue
            if entry.agent.visible_to(principal) and matches(entry.agent, query):
                found.append(AgentMatch(entry.position, entry.agent))
                if len(found) == limit:
                    break
        return found

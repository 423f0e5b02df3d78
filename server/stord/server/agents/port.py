"""The agent registry contract (DESIGN 4.5): agents by uri, owners, PRIVATE visibility and search."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from stord.server.ports._base import JsonObject, PermissionDenied


class AgentStatus(enum.Enum):
    """Whether an agent is in service."""

    ACTIVE = "active"
    INACTIVE = "inactive"


class AgentVisibility(enum.Enum):
    """Who may read an agent: every caller of its namespace, or its owner only."""

    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True, slots=True)
class StoredAgent:
    """One agent definition.

    `owner` is the principal of the caller that last wrote it, '' for an anonymous one; a PRIVATE agent
    always has an owner (the servicer refuses anonymous PRIVATE writes).
    """

    uri: str
    name: str
    version: str
    status: AgentStatus
    visibility: AgentVisibility
    owner: str
    configuration: JsonObject | None
    update_time: float = 0.0
    """Seconds since the epoch of the last write, by the store's clock; what a writer passes is replaced."""

    def visible_to(self, principal: str) -> bool:
        """Return whether a caller with `principal` ('' when anonymous) may read the agent."""
        return self.visibility is AgentVisibility.PUBLIC or self.owner == principal


@dataclass(frozen=True, slots=True)
class AgentWrite:
    """What a set stored, and whether it created the agent rather than replacing one."""

    agent: StoredAgent
    created: bool


@dataclass(frozen=True, slots=True)
class AgentMatch:
    """One search result and its position in insertion order, which the next page resumes after."""

    position: int
    agent: StoredAgent


class AgentStore(Protocol):
    """Agent definitions by uri, per namespace (DESIGN 4.5). Arguments arrive validated.

    Ownership, the same for every operation: an agent may be written or deleted by the principal that owns
    it, or by anyone when its owner is ''. Search matches an agent when the query is empty, equals its uri,
    or is contained in `fold(name)` or `fold(configuration_text(configuration))` after folding the query too
    (`stord.server.agents.search`), so the rule is computed once, in Python, for every backend.
    """

    async def get(self, namespace: str, uri: str) -> StoredAgent | None:
        """Return the agent stored under `uri`, whoever may read it (the caller checks `visible_to`)."""
        ...

    async def set(self, namespace: str, agent: StoredAgent) -> AgentWrite:
        """Create or replace the agent, stamped with the store's clock; `agent.owner` is the writer.

        Raise PermissionDenied, changing nothing, when the uri holds an agent owned by another principal.
        A replaced agent keeps its position in insertion order; a new one goes last.
        """
        ...

    async def delete(self, namespace: str, uri: str, *, principal: str) -> bool:
        """Remove the agent; False when there was none. PermissionDenied when another principal owns it."""
        ...

    async def search(
        self, namespace: str, query: str, *, principal: str, after: int | None, limit: int
    ) -> list[AgentMatch]:
        """Return up to `limit` matches `principal` may read, positioned after `after`, in insertion order."""
        ...


def not_owner(uri: str) -> PermissionDenied:
    """The error of a write or delete of an agent that belongs to another principal."""
    return PermissionDenied(f"agent {uri!r} belongs to another principal")

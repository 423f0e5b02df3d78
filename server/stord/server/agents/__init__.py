"""Agents: the AgentStoreService contract (agents by uri, owners, PRIVATE visibility).

`port` is the store Protocol, `service` the servicer, `search` the case-folding search rule.
"""

from stord.server.agents.port import (
    AgentMatch,
    AgentStatus,
    AgentStore,
    AgentVisibility,
    AgentWrite,
    StoredAgent,
)

__all__ = [
    "AgentMatch",
    "AgentStatus",
    "AgentStore",
    "AgentVisibility",
    "AgentWrite",
    "StoredAgent",
]

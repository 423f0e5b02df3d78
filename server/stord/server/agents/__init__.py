"""Agents: the AgentStoreService contract (agents by uri, owners, PRIVATE visibility).

`port` is the store Protocol, `service` the servicer, `search` the case-folding search rule.
"""

__all__: list[str] = []

"""Agents: the AgentStoreService contract: port, servicer, and the case-folding search rule."""

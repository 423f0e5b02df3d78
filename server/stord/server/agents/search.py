"""The agent search rule (DESIGN 4.5), computed in Python so that every backend matches the same agents.

SQL backends store `fold(name)` and `fold(configuration_text(...))` beside each agent and look for the folded
query with a plain substring function (`instr`, `strpos`), which has no wildcard syntax to escape: `%`, `_`
and `\\` are ordinary characters. Neither SQLite's `lower` (ASCII only) nor PostgreSQL's (locale dependent)
folds case the way Python does, which is why the folding happens here.
"""

from __future__ import annotations

import json

from stord.server.agents.port import StoredAgent
from stord.server.ports import JsonObject

__all__ = ["configuration_text", "fold", "matches"]


def fold(text: str) -> str:
    """Return `text` with case folded (Unicode full case folding: `Straße` and `STRASSE` agree)."""
    return text.casefold()


def configuration_text(configuration: JsonObject | None) -> str:
    """Return the JSON text a search looks into: keys sorted, no spaces, '' when there is none."""
    if configuration is None:
        return ""
    return json.dumps(configuration, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def matches(agent: StoredAgent, query: str) -> bool:
    """Return whether `agent` matches a search for `query` (the memory backend's filter)."""
    if not query or agent.uri == query:
        return True
    folded = fold(query)
    return folded in fold(agent.name) or folded in fold(configuration_text(agent.configuration))

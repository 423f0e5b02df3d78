"""The payload-search predicate of the SQL event stores: the exact LIKE, narrowed by a trigram index.

SQLite asks its FTS5 trigram table (0006_event_rollups_search.sql) for the events holding every chosen
trigram of the text; PostgreSQL's planner uses the pg_trgm GIN index for the ILIKE by itself. Either way
the LIKE decides (literal `%`, `_` and backslash, ASCII letters folded), so answers never depend on the
index: a text under three characters, which no trigram index can serve, is answered by the LIKE alone.
"""

from __future__ import annotations

from stord.server.events.model import search_pattern
from stord.server.events.port import EventFilter
from stord.server.events.search import search_trigrams

__all__ = ["search_conditions", "search_index_leads"]


def search_conditions(search: str, *, case_insensitive_like: str, fts_table: bool) -> list[tuple[str, str]]:
    """Return the clauses (each with a `{}` mark for its value) selecting events whose payload holds `search`.

    `fts_table`: narrow by SQLite's `events_search` (see `search_index_leads`); PostgreSQL's planner uses
    its index for the LIKE by itself.
    """
    exact = (f"payload {case_insensitive_like} {{}} ESCAPE '\\'", search_pattern(search))
    trigrams = search_trigrams(search)
    if not fts_table or not trigrams:
        return [exact]
    match = " AND ".join('"' + trigram.replace('"', '""') + '"' for trigram in trigrams)
    return [("rowid IN (SELECT rowid FROM events_search WHERE events_search MATCH {})", match), exact]


def search_index_leads(event_filter: EventFilter) -> bool:
    """Return whether SQLite should find the filter's events through its search index first.

    Only for a search of three characters or more (the index has nothing for shorter ones), and not within
    a session, whose few events its own index reads faster than the index could list every event holding a
    common text. When the index leads, the planner must not start from an index on `namespace`: without
    statistics it takes that equality for selective, and would scan the namespace instead.
    """
    return (
        event_filter.search is not None
        and event_filter.session_id is None
        and bool(search_trigrams(event_filter.search))
    )

"""Payload search through a trigram index: which trigrams of a search text an index is asked for.

The index only narrows. An event holding the search text holds every trigram of it, and a trigram index
that folds case (more than ASCII, as SQLite's and pg_trgm's do) finds the event under each of them, so the
events holding all the chosen trigrams are a superset of the matches; the exact predicate (LIKE, literal,
ASCII case folding) then decides. A text under three characters has no trigram: it is answered by a scan.
"""

from __future__ import annotations

__all__ = ["MAX_TRIGRAMS", "search_trigrams"]

MAX_TRIGRAMS = 12
"""Trigrams asked of the index at most, spread over the text: each narrows less than the one before, and
each costs the index a posting list to read."""


def search_trigrams(search: str) -> list[str]:
    """Return distinct trigrams of `search` (characters, not bytes) to ask an index for; none when too short.

    Trigrams holding a NUL are left out: they cannot be written in an index query, and a subset of the
    trigrams still selects a superset of the matches.
    """
    windows = [search[index : index + 3] for index in range(len(search) - 2)]
    distinct = list(dict.fromkeys(window for window in windows if "\x00" not in window))
    if len(distinct) <= MAX_TRIGRAMS:
        return distinct
    step = (len(distinct) - 1) / (MAX_TRIGRAMS - 1)
    return [distinct[round(index * step)] for index in range(MAX_TRIGRAMS)]

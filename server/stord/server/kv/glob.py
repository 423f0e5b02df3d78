"""The key glob of DESIGN 4.1: `*` any run, `?` one character, everything else literal."""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["glob_regex", "literal_prefix", "prefix_successor"]


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile `pattern` into a regex for `fullmatch`; case-sensitive, `.` matching newlines too."""
    parts = [".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern]
    return re.compile("".join(parts), re.DOTALL)


def literal_prefix(pattern: str) -> str:
    """Return the part of `pattern` before its first wildcard: every match starts with it."""
    for index, char in enumerate(pattern):
        if char in "*?":
            return pattern[:index]
    return pattern


def prefix_successor(prefix: str) -> str | None:
    """Return the least string above every string that starts with `prefix`; None when nothing is above.

    With the prefix itself it bounds an index range scan: `prefix <= key < prefix_successor(prefix)`.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code <= 0x10FFFF:
            # Surrogates cannot be stored; the next storable code point follows them.
            chars[-1] = chr(0xE000 if 0xD800 <= code <= 0xDFFF else code)
            return "".join(chars)
        chars.pop()
    return None

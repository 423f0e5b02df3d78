"""Every Redis key stord writes, built in one place (STYLE: one constants place for key prefixes).

A namespace's keys live under `stord:{keyspace}:{namespace}:`, values under `...:v:{key}` and lists under
`...:l:{key}`. The server only accepts namespaces of `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`, so no namespace
contains `:` and one namespace's prefix is never a prefix of another's; user keys are arbitrary UTF-8.
"""

from __future__ import annotations

from stord.server.kv.port import Keyspace

ROOT = "stord"
VALUE_KIND = "v"
LIST_KIND = "l"
PAGE_TOKEN_KEY = f"{ROOT}:page-token-key"
"""The key that seals page tokens; outside every namespace's prefix, so no export or Clear touches it."""

_GLOB_SPECIAL = frozenset("*?[]\\")


def namespace_prefix(keyspace: Keyspace, namespace: str) -> str:
    """Return the prefix shared by every key of one namespace in one role."""
    return f"{ROOT}:{keyspace.value}:{namespace}:"


def value_key(prefix: str, key: str) -> str:
    """Return the Redis key holding the value of `key`, `prefix` from `namespace_prefix`."""
    return f"{prefix}{VALUE_KIND}:{key}"


def list_key(prefix: str, key: str) -> str:
    """Return the Redis key holding the list of `key`, `prefix` from `namespace_prefix`."""
    return f"{prefix}{LIST_KIND}:{key}"


def escape_glob(text: str) -> str:
    """Escape Redis's glob metacharacters so that a SCAN MATCH pattern matches `text` literally."""
    return "".join(f"\\{char}" if char in _GLOB_SPECIAL else char for char in text)


def both_kinds_match(prefix: str, key_prefix: str) -> str:
    """Return a SCAN MATCH pattern for the namespace's values and lists whose key starts with `key_prefix`."""
    return f"{escape_glob(prefix)}[{VALUE_KIND}{LIST_KIND}]:{escape_glob(key_prefix)}*"


def whole_namespace_match(prefix: str) -> str:
    """Return a SCAN MATCH pattern for every key of the namespace."""
    return f"{escape_glob(prefix)}*"

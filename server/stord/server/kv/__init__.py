"""Key-value: the cache and database contracts (CacheService, DatabaseService).

`port` is the store Protocol every backend implements, `service` the servicers, `glob` the key pattern rule.
"""

from stord.server.kv.port import (
    Keyspace,
    KeyValueStore,
    SetCondition,
    ValueEntry,
)

__all__ = [
    "KeyValueStore",
    "Keyspace",
    "SetCondition",
    "ValueEntry",
]

"""Key-value: the cache and database contracts (CacheService, DatabaseService).

`port` is the store Protocol every backend implements, `service` the servicers, `glob` the key pattern rule.
"""

__all__: list[str] = []

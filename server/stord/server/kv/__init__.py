"""Key-value: the cache and database contracts (CacheService, DatabaseService): port, servicer, key glob."""

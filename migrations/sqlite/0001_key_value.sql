-- Key-value contract (DESIGN 4.1). `keyspace` keeps the cache role apart from the database role when one
-- SQLite file serves both. Keys compare with BINARY collation, which orders UTF-8 text by code point.

CREATE TABLE kv_values (
    keyspace   TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    expires_at REAL,            -- seconds since the epoch; NULL never expires
    PRIMARY KEY (keyspace, namespace, key)
) WITHOUT ROWID;

CREATE INDEX kv_values_expiry ON kv_values (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE kv_lists (
    keyspace  TEXT NOT NULL,
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    length    INTEGER NOT NULL,
    PRIMARY KEY (keyspace, namespace, key)
) WITHOUT ROWID;

CREATE TABLE kv_list_items (
    keyspace  TEXT NOT NULL,
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    position  INTEGER NOT NULL, -- 0 is the oldest item
    value     BLOB NOT NULL,
    PRIMARY KEY (keyspace, namespace, key, position)
) WITHOUT ROWID;

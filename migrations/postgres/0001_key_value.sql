-- Key-value contract (DESIGN 4.1). `keyspace` keeps the cache role apart from the database role when one
-- database serves both. COLLATE "C" makes keys order by code point, as on every other backend, whatever
-- the database's locale, and keeps LIKE prefix scans on the primary key.

CREATE TABLE kv_values (
    keyspace   text NOT NULL,
    namespace  text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    value      bytea NOT NULL,
    expires_at timestamptz,     -- NULL never expires
    PRIMARY KEY (keyspace, namespace, key)
);

CREATE INDEX kv_values_expiry ON kv_values (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE kv_lists (
    keyspace  text NOT NULL,
    namespace text COLLATE "C" NOT NULL,
    key       text COLLATE "C" NOT NULL,
    length    bigint NOT NULL,
    PRIMARY KEY (keyspace, namespace, key)
);

CREATE TABLE kv_list_items (
    keyspace  text NOT NULL,
    namespace text COLLATE "C" NOT NULL,
    key       text COLLATE "C" NOT NULL,
    position  bigint NOT NULL,  -- 0 is the oldest item
    value     bytea NOT NULL,
    PRIMARY KEY (keyspace, namespace, key, position)
);

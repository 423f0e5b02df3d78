-- The key that seals page tokens (stord.server.rpc.page_tokens): one per database, so a token issued by one
-- daemon pages on every other daemon over the same database. The first daemon to start inserts a random key
-- (ON CONFLICT DO NOTHING, so concurrent starts agree on one); the table never holds more than this row.
CREATE TABLE page_token_key (
    id  integer PRIMARY KEY CHECK (id = 1),
    key bytea NOT NULL CHECK (length(key) >= 16)
);

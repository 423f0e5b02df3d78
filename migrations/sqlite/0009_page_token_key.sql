-- The key that seals page tokens (stord.server.rpc.page_tokens): one per database, so a token issued by one
-- daemon pages on every other daemon over the same file. The first daemon to start inserts a random key
-- (INSERT OR IGNORE, so concurrent starts agree on one); the table never holds more than this row.
CREATE TABLE page_token_key (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    key BLOB NOT NULL CHECK (length(key) >= 16)
);

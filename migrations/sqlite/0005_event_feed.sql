-- The event feed (TailEvents across processes): each write that stores new events appends one batch, numbered
-- per namespace from 1 in commit order. SQLite commits one write transaction at a time, whichever process
-- makes it, so the numbers follow commit order without gaps, and a follower reading the batches after the
-- last one it read neither misses nor repeats one.

CREATE TABLE event_feed_heads (
    namespace TEXT PRIMARY KEY,
    position  INTEGER NOT NULL          -- the position of the namespace's newest batch
);

-- A batch is kept for a few minutes (the writers prune the oldest), long enough for every follower to read it.
CREATE TABLE event_feed (
    namespace    TEXT NOT NULL,
    position     INTEGER NOT NULL,
    committed_at INTEGER NOT NULL,      -- milliseconds since the epoch, by the writer's clock
    event_ids    TEXT NOT NULL,         -- a JSON array of the batch's new event ids, in batch order
    PRIMARY KEY (namespace, position)
);

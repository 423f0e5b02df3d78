-- The event feed (TailEvents across daemons): each transaction that stores new events appends one batch,
-- numbered per namespace from 1 in commit order, and NOTIFYs `stord_events` with `<namespace> <position>`.
-- Event ids or sequences cannot serve as a cursor: concurrent transactions take them in one order and commit
-- in another, so a reader could pass over an id that commits late. The batch number is taken last, by
-- updating the namespace's head row, whose lock is held until the commit: the next transaction of the
-- namespace takes the next number only once this one committed (or rolled back, freeing its number). So the
-- numbers follow commit order without gaps, and a follower reading the batches after the last one it read
-- neither misses nor repeats one, including after a restart or a lost notification.

CREATE TABLE event_feed_heads (
    namespace text COLLATE "C" PRIMARY KEY,
    position  bigint NOT NULL           -- the position of the namespace's newest batch
);

-- A batch is kept for a few minutes (the writers prune the oldest), long enough for every follower to read it.
CREATE TABLE event_feed (
    namespace    text COLLATE "C" NOT NULL,
    position     bigint NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    event_ids    text[] NOT NULL,       -- the batch's new event ids, in batch order
    PRIMARY KEY (namespace, position)
);

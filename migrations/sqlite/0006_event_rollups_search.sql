-- Analytics from hourly rollups and payload search from a trigram index (events-read).
--
-- event_rollups holds, per namespace, hour and agent, the figures GetAnalytics sums; event_rollup_sessions
-- the distinct sessions of each (namespace, hour, agent), so distinct counts over any union of hours stay
-- exact. The transaction that stores a batch adds the batch to both; retention corrects them in the
-- transaction that deletes. `hour` is the start of the hour in milliseconds since the epoch, UTC.

CREATE TABLE event_rollups (
    namespace       TEXT NOT NULL,
    hour            INTEGER NOT NULL,
    agent_id        TEXT NOT NULL,
    event_count     INTEGER NOT NULL,
    tool_call_count INTEGER NOT NULL,
    error_count     INTEGER NOT NULL,   -- severity error or critical, or a tool_error
    latency_sum     REAL NOT NULL,      -- sum of latency_ms (payload.durationMs of tool_response events)
    latency_count   INTEGER NOT NULL,   -- how many events have a latency_ms
    cost_sum        REAL NOT NULL,      -- sum of cost_usd (payload.costUsd of cost_tracked events)
    PRIMARY KEY (namespace, hour, agent_id)
) WITHOUT ROWID;

CREATE TABLE event_rollup_sessions (
    namespace  TEXT NOT NULL,
    hour       INTEGER NOT NULL,
    agent_id   TEXT NOT NULL,
    session_id TEXT NOT NULL,
    PRIMARY KEY (namespace, hour, agent_id, session_id)
) WITHOUT ROWID;

INSERT INTO event_rollups (namespace, hour, agent_id, event_count, tool_call_count, error_count, latency_sum,
                           latency_count, cost_sum)
SELECT namespace, timestamp - ((timestamp % 3600000) + 3600000) % 3600000, agent_id, count(*),
       sum(event_type = 'tool_call'), sum(severity IN ('error', 'critical') OR event_type = 'tool_error'),
       total(latency_ms), count(latency_ms), total(cost_usd)
FROM events GROUP BY 1, 2, 3;

INSERT INTO event_rollup_sessions (namespace, hour, agent_id, session_id)
SELECT DISTINCT namespace, timestamp - ((timestamp % 3600000) + 3600000) % 3600000, agent_id, session_id
FROM events;

-- Payload search: the trigrams of each event's payload, by the event's rowid. Contentless (the payload is in
-- `events`) and without positions (detail=none): a search asks for all its trigrams, which narrows to the
-- events holding them, and LIKE on the event decides. Folds case beyond ASCII, so it never misses a match.
-- The store adds each batch's rows in the batch's transaction; deletions take theirs out by this trigger.
-- VACUUM may renumber the rowids of `events`; after one, rebuild it: DELETE everything with
-- INSERT INTO events_search(events_search) VALUES ('delete-all'), then insert every event again.
CREATE VIRTUAL TABLE events_search USING fts5(
    payload, content = '', tokenize = 'trigram', detail = 'none', columnsize = 0
);

INSERT INTO events_search (rowid, payload) SELECT rowid, payload FROM events;

CREATE TRIGGER events_search_delete AFTER DELETE ON events BEGIN
    INSERT INTO events_search (events_search, rowid, payload) VALUES ('delete', old.rowid, old.payload);
END;

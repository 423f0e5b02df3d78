-- Documents and jobs (DESIGN 4.2, 4.3). Text compares with BINARY collation, which orders UTF-8 text by code
-- point, as on every other backend. Times are seconds since the epoch, from the daemon's clock.

-- `data` is a JSON object as text; queries type its fields with json_type() and read them with
-- json_extract(). CreateIndex adds expression indexes on this table, one per collection and field, named
-- documents_field_<hash> (see backends/sqlite/_documents.py).
CREATE TABLE documents (
    namespace   TEXT NOT NULL,
    collection  TEXT NOT NULL,
    id          TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    create_time REAL NOT NULL,
    update_time REAL NOT NULL,
    data        TEXT NOT NULL,
    UNIQUE (namespace, collection, id)
);

-- `sequence` (the rowid) is the enqueue order. `status` is one of pending, running, retrying, completed,
-- failed; `lease_token` and `lease_expires_at` are set while running.
CREATE TABLE jobs (
    sequence         INTEGER PRIMARY KEY,
    namespace        TEXT NOT NULL,
    id               TEXT NOT NULL,
    queue            TEXT NOT NULL,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    run_at           REAL NOT NULL,
    attempts         INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    dedupe_key       TEXT,
    payload          TEXT NOT NULL,
    last_error       TEXT,
    lease_token      TEXT,
    lease_expires_at REAL,
    create_time      REAL NOT NULL,
    update_time      REAL NOT NULL
);

CREATE UNIQUE INDEX jobs_by_id ON jobs (namespace, id);

-- Dequeue walks the waiting jobs of a queue in the order it hands them out and stops at its batch size.
CREATE INDEX jobs_waiting ON jobs (namespace, queue, priority DESC, run_at, sequence)
    WHERE status IN ('pending', 'retrying');

-- Running jobs by lease expiry: those whose lease ran out are handed out again (or failed).
CREATE INDEX jobs_leased ON jobs (namespace, queue, lease_expires_at) WHERE status = 'running';

-- An unfinished job holds its dedupe key.
CREATE UNIQUE INDEX jobs_dedupe ON jobs (namespace, queue, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running', 'retrying');

-- ListJobs by status in enqueue order, and the per-status counts of GetQueueStats.
CREATE INDEX jobs_by_status ON jobs (namespace, queue, status, sequence);

-- Job instants become integers: microseconds since the epoch. The stores kept them as REAL seconds, which
-- round past the last instant a google.protobuf.Timestamp carries (9999-12-31T23:59:59.999999999Z): a job
-- enqueued for then could not be read back. A REAL column would turn integers back into floats, so the
-- table is rebuilt with INTEGER columns; values are rounded to the microsecond and kept within the range.
CREATE TABLE jobs_new (
    sequence         INTEGER PRIMARY KEY,
    namespace        TEXT NOT NULL,
    id               TEXT NOT NULL,
    queue            TEXT NOT NULL,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    attempts         INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    dedupe_key       TEXT,
    payload          TEXT NOT NULL,
    last_error       TEXT,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    create_time      INTEGER NOT NULL,
    update_time      INTEGER NOT NULL
);

INSERT INTO jobs_new (sequence, namespace, id, queue, status, priority, run_at, attempts, max_attempts,
                      dedupe_key, payload, last_error, lease_token, lease_expires_at, create_time, update_time)
SELECT sequence, namespace, id, queue, status, priority,
       max(-62135596800000000, min(253402300799999999, CAST(round(run_at * 1000000) AS INTEGER))),
       attempts, max_attempts, dedupe_key, payload, last_error, lease_token,
       max(-62135596800000000, min(253402300799999999, CAST(round(lease_expires_at * 1000000) AS INTEGER))),
       max(-62135596800000000, min(253402300799999999, CAST(round(create_time * 1000000) AS INTEGER))),
       max(-62135596800000000, min(253402300799999999, CAST(round(update_time * 1000000) AS INTEGER)))
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

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

-- The sweeper settles lapsed leases of every namespace, oldest first.
CREATE INDEX jobs_lapsing ON jobs (lease_expires_at) WHERE status = 'running';

-- Retention deletes finished jobs of every namespace by status and age, oldest first, in small batches.
CREATE INDEX jobs_finished ON jobs (status, update_time) WHERE status IN ('completed', 'failed');

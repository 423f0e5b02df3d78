-- Documents and jobs (DESIGN 4.2, 4.3). COLLATE "C" makes names and ids order by code point, as on every
-- other backend, whatever the database's locale.

-- `data` is a JSON object; queries type its fields with jsonb_typeof() and compare them with jsonb
-- operators. CreateIndex adds expression indexes on this table, two per collection and field, named
-- documents_field_<hash> (see backends/postgres/_documents.py).
CREATE TABLE documents (
    namespace   text COLLATE "C" NOT NULL,
    collection  text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    revision    bigint NOT NULL,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    data        jsonb NOT NULL,
    PRIMARY KEY (namespace, collection, id)
);

-- `sequence` is the enqueue order (unique by construction; no index of its own, since every status change
-- writes an entry into every index of the row). `status` is one of pending, running, retrying, completed,
-- failed; `lease_token` and `lease_expires_at` are set while running.
CREATE TABLE jobs (
    namespace        text COLLATE "C" NOT NULL,
    id               text COLLATE "C" NOT NULL,
    sequence         bigint GENERATED ALWAYS AS IDENTITY,
    queue            text COLLATE "C" NOT NULL,
    status           text NOT NULL,
    priority         integer NOT NULL,
    run_at           timestamptz NOT NULL,
    attempts         integer NOT NULL,
    max_attempts     integer NOT NULL,
    dedupe_key       text,
    payload          jsonb NOT NULL,
    last_error       text,
    lease_token      text,
    lease_expires_at timestamptz,
    create_time      timestamptz NOT NULL,
    update_time      timestamptz NOT NULL,
    PRIMARY KEY (namespace, id)
);

-- Dequeue walks the waiting jobs of a queue in the order it hands them out and stops at its batch size.
CREATE INDEX jobs_waiting ON jobs (namespace, queue, priority DESC, run_at, sequence)
    WHERE status IN ('pending', 'retrying');

-- Running jobs by lease expiry: those whose lease ran out are handed out again (or failed).
CREATE INDEX jobs_leased ON jobs (namespace, queue, lease_expires_at) WHERE status = 'running';

-- An unfinished job holds its dedupe key; enqueues rely on it to deduplicate across daemons.
CREATE UNIQUE INDEX jobs_dedupe ON jobs (namespace, queue, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running', 'retrying');

-- ListJobs by status in enqueue order, and the per-status counts of GetQueueStats.
CREATE INDEX jobs_by_status ON jobs (namespace, queue, status, sequence);

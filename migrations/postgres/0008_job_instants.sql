-- Job instants become integers: microseconds since the epoch. The stores computed them as float seconds,
-- which round past the last instant a google.protobuf.Timestamp carries (9999-12-31T23:59:59.999999999Z):
-- a job enqueued for then could not be read back. Integers are exact over the whole Timestamp range, and
-- cheaper to carry than timestamps. The conversion is exact: timestamptz keeps microseconds.
ALTER TABLE jobs
    ALTER COLUMN run_at TYPE bigint USING (extract(epoch FROM run_at) * 1000000)::bigint,
    ALTER COLUMN lease_expires_at TYPE bigint USING (extract(epoch FROM lease_expires_at) * 1000000)::bigint,
    ALTER COLUMN create_time TYPE bigint USING (extract(epoch FROM create_time) * 1000000)::bigint,
    ALTER COLUMN update_time TYPE bigint USING (extract(epoch FROM update_time) * 1000000)::bigint;

-- The sweeper settles lapsed leases of every namespace, oldest first.
CREATE INDEX jobs_lapsing ON jobs (lease_expires_at) WHERE status = 'running';

-- Retention deletes finished jobs of every namespace by status and age, oldest first, in small batches.
CREATE INDEX jobs_finished ON jobs (status, update_time) WHERE status IN ('completed', 'failed');

"""Jobs: the JobQueueService contract (priorities, schedules, retries, leases).

`port` is the queue Protocol, `service` the servicer, `rules` the retry delay, lease tokens and in-process
wake-ups every backend shares.
"""

from stord.server.jobs.port import (
    UNFINISHED_JOB_STATUSES,
    EnqueuedJob,
    Job,
    JobLease,
    JobQueueStore,
    JobStatus,
    NewJob,
    QueueStats,
)

__all__ = [
    "UNFINISHED_JOB_STATUSES",
    "EnqueuedJob",
    "Job",
    "JobLease",
    "JobQueueStore",
    "JobStatus",
    "NewJob",
    "QueueStats",
]

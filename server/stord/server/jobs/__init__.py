"""Jobs: the JobQueueService contract (priorities, schedules, retries, leases).

`port` is the queue Protocol, `service` the servicer, `rules` the retry delay, lease tokens and in-process
wake-ups every backend shares.
"""

__all__: list[str] = []

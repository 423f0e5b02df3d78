"""The job queue's upkeep (DESIGN 4.3), run by the daemon's sweepers over every namespace.

- Lapsed leases: a RUNNING job whose lease ran out is settled by the expiry sweeper (every
  `expiry_sweep_interval`), not only by the next dequeue of its queue: FAILED on its last attempt, else
  RETRYING and due at once.
- Retention: COMPLETED jobs older than `completed_job_retention_days` (default 7) and FAILED ones older than
  `failed_job_retention_days` (default 30), by the time they finished, are deleted by the daily retention
  pass, also behind `stord jobs purge`. PENDING, RUNNING and RETRYING jobs are never deleted.

Both work in small batches, each its own transaction, so neither holds a lock or the SQLite writer for long.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from stord.server.jobs.port import MICROS, MIN_INSTANT, JobQueueStore, JobStatus, LeaseSweep, now_micros

__all__ = ["SWEEP_BATCH", "JobPurge", "purge_finished_jobs", "settle_lapsed_leases"]

SWEEP_BATCH = 500
"""Jobs changed or deleted per transaction."""

DAY_MICROS = 86_400 * MICROS

_log = structlog.get_logger("stord.jobs")


@dataclass(frozen=True, slots=True)
class JobPurge:
    """Finished jobs that retention deleted, by status."""

    completed: int = 0
    failed: int = 0


async def settle_lapsed_leases(store: JobQueueStore, *, batch: int = SWEEP_BATCH) -> LeaseSweep:
    """Settle every job whose lease ran out by now; return how many failed and how many will be retried."""
    failed = retried = 0
    while True:
        swept = await store.settle_lapsed_leases(limit=batch)
        failed += swept.failed
        retried += swept.retried
        if swept.failed + swept.retried < batch:
            break
        await asyncio.sleep(0)  # let calls in between
    if failed or retried:
        _log.info("job_leases_lapsed", failed=failed, retried=retried)
    return LeaseSweep(failed=failed, retried=retried)


async def _delete_older(store: JobQueueStore, status: JobStatus, before: int, batch: int) -> int:
    deleted = 0
    while True:
        count = await store.delete_finished(status, before=before, limit=batch)
        deleted += count
        if count < batch:
            return deleted
        await asyncio.sleep(0)


async def purge_finished_jobs(
    store: JobQueueStore, *, completed_days: int, failed_days: int, batch: int = SWEEP_BATCH
) -> JobPurge:
    """Delete COMPLETED jobs finished over `completed_days` days ago and FAILED ones over `failed_days`.

    A number of days of 0 keeps that status forever.
    """
    now = now_micros(store.clock)
    deleted: dict[JobStatus, int] = {}
    for status, days in ((JobStatus.COMPLETED, completed_days), (JobStatus.FAILED, failed_days)):
        if days > 0:
            before = max(now - days * DAY_MICROS, MIN_INSTANT)
            deleted[status] = await _delete_older(store, status, before, batch)
    purge = JobPurge(completed=deleted.get(JobStatus.COMPLETED, 0), failed=deleted.get(JobStatus.FAILED, 0))
    _log.info(
        "job_retention_applied",
        completed_days=completed_days,
        failed_days=failed_days,
        deleted_completed=purge.completed,
        deleted_failed=purge.failed,
    )
    return purge

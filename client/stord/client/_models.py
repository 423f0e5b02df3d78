"""Documents, jobs and transaction steps as plain Python values, for the blocking and asyncio clients."""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stord.client._codec import TTL

__all__ = [
    "CreateDocument",
    "DeleteDocument",
    "Document",
    "EnqueueJob",
    "EnqueuedJob",
    "Filter",
    "Job",
    "JobStatus",
    "QueueStats",
    "TransactStep",
    "UpdateDocument",
]

Filter = tuple[str, str, Any]
"""A condition on a document field: (dotted path, operator, value).

Operators: `eq`, `ne`, `in` (the value is a list), `gt`, `gte`, `lt`, `lte`. Numbers compare with numbers and
strings with strings; a field of another type, or a missing one, matches only `ne`.
"""


@dataclass(frozen=True)
class Document:
    """A stored document."""

    collection: str
    id: str
    revision: int
    create_time: datetime.datetime
    update_time: datetime.datetime
    data: dict[str, Any]


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    """A job; `lease_token` is set only on jobs handed out by `dequeue`."""

    id: str
    queue: str
    payload: dict[str, Any]
    status: JobStatus
    priority: int
    run_at: datetime.datetime
    attempts: int
    max_attempts: int
    dedupe_key: str | None
    last_error: str | None
    create_time: datetime.datetime
    update_time: datetime.datetime
    lease_expire_time: datetime.datetime | None
    lease_token: str | None


@dataclass(frozen=True)
class EnqueuedJob:
    """The id of an enqueued job, or of the unfinished job with the same dedupe key (`deduplicated`)."""

    job_id: str
    deduplicated: bool


@dataclass(frozen=True)
class QueueStats:
    """The jobs of a queue by status."""

    pending: int
    running: int
    retrying: int
    completed: int
    failed: int


@dataclass(frozen=True)
class CreateDocument:
    """A transaction step: create a document (`id` None: the server makes a UUID)."""

    collection: str
    data: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class UpdateDocument:
    """A transaction step: shallow-merge `data` into a document, at `expected_revision` if given."""

    collection: str
    id: str
    data: Mapping[str, Any]
    expected_revision: int | None = None


@dataclass(frozen=True)
class DeleteDocument:
    """A transaction step: delete a document, at `expected_revision` if given."""

    collection: str
    id: str
    expected_revision: int | None = None


@dataclass(frozen=True)
class EnqueueJob:
    """A job to enqueue, alone, in a batch or as a transaction step.

    Due at `run_at`, or `delay` after now by the daemon's clock, or at once. `max_attempts` 0 means 3. While a
    job of the queue with the same `dedupe_key` is unfinished, enqueueing returns that job instead.
    """

    queue: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    run_at: datetime.datetime | None = None
    delay: TTL | None = None
    priority: int = 0
    max_attempts: int = 0
    dedupe_key: str | None = None


TransactStep = CreateDocument | UpdateDocument | DeleteDocument | EnqueueJob
"""One step of `transact`; its result is the Document, True for a delete, or the EnqueuedJob."""

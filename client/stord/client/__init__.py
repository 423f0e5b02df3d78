"""The stord client: `Client` (blocking) and `AsyncClient` (asyncio), with errors as exceptions.

One layout for every contract: `_<contract>.py` (`_kv`, `_documents`, `_jobs`, `_agents`, `_manifests`) holds
the request builders, the blocking class and its asyncio twin, method for method (a test checks they match),
over `_sync._Caller` and `_async._Caller`. Conversions of times, JSON, documents and jobs live in `_convert`.
Results: key-value, documents and jobs give Python values and the dataclasses of `_models`; agents,
manifests and events give the generated `stord.v1` messages of the record (never an RPC's response, except
where it carries more than the record, as `agents.set`'s `created`). The event modules are still split in
two (`_events.py`, `_events_async.py`).
"""

from stord.client._agents import Agents, AsyncAgents, agent_configuration
from stord.client._async import AsyncClient
from stord.client._codec import TTL, Tls
from stord.client._documents import AsyncDocuments, Documents
from stord.client._events import Events, EventTail
from stord.client._events_async import AsyncEvents, AsyncEventTail
from stord.client._events_codec import make_event, new_event_id
from stord.client._ingest import EventIngestor, IngestProgress
from stord.client._ingest_async import AsyncEventIngestor
from stord.client._jobs import AsyncJobs, Jobs
from stord.client._kv import AsyncCache, AsyncDatabase, Cache, Database
from stord.client._manifests import AsyncManifests, Manifests
from stord.client._models import (
    CreateDocument,
    DeleteDocument,
    Document,
    EnqueuedJob,
    EnqueueJob,
    Filter,
    Job,
    JobStatus,
    QueueStats,
    TransactStep,
    UpdateDocument,
)
from stord.client._retry import RetryPolicy
from stord.client._sync import Client
from stord.client._worker import AsyncWorker, Worker
from stord.client.errors import (
    AlreadyExists,
    Cancelled,
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    StordError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)

__all__ = [
    "TTL",
    "Agents",
    "AlreadyExists",
    "AsyncAgents",
    "AsyncCache",
    "AsyncClient",
    "AsyncDatabase",
    "AsyncDocuments",
    "AsyncEventIngestor",
    "AsyncEventTail",
    "AsyncEvents",
    "AsyncJobs",
    "AsyncManifests",
    "AsyncWorker",
    "Cache",
    "Cancelled",
    "Client",
    "Conflict",
    "CreateDocument",
    "Database",
    "DeadlineExceeded",
    "DeleteDocument",
    "Document",
    "Documents",
    "EnqueueJob",
    "EnqueuedJob",
    "EventIngestor",
    "EventTail",
    "Events",
    "FailedPrecondition",
    "Filter",
    "IngestProgress",
    "Internal",
    "InvalidArgument",
    "Job",
    "JobStatus",
    "Jobs",
    "Manifests",
    "NotFound",
    "PermissionDenied",
    "QueueStats",
    "ResourceExhausted",
    "RetryPolicy",
    "StordError",
    "Tls",
    "TransactStep",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UpdateDocument",
    "Worker",
    "agent_configuration",
    "make_event",
    "new_event_id",
]

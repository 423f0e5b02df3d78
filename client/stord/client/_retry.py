"""Which RPCs the client retries after UNAVAILABLE, and the gRPC service config that does it.

gRPC retries a call only while no answer has arrived, and only with the methods its service config names,
within the call's deadline (every attempt counts against it). A call that failed with UNAVAILABLE may still
have run on the daemon (it died after committing, before answering), so only methods that can safely run
twice are named: reads, and writes that leave the same state when applied twice and do not turn a success into
an error on the second run. Their answer is the last attempt's, so a flag such as `deleted` or `written` may
describe the repeat (False) rather than the attempt that did the work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from stord.v1 import (
    admin_pb2,
    agents_pb2,
    alerts_pb2,
    documents_pb2,
    events_pb2,
    jobs_pb2,
    kv_pb2,
    manifests_pb2,
)

__all__ = ["RETRIED_BY_METHOD", "RetryPolicy", "all_methods", "channel_options"]

_MAX_ATTEMPTS = 5
"""gRPC's own ceiling: a policy asking for more attempts is cut to five."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a client retries an idempotent call that failed with UNAVAILABLE, and waits for the daemon.

    `max_attempts` counts the first attempt (1 to 5; 1 never retries). The pause before retry n is random
    between 0 and min(`initial_backoff` * `backoff_multiplier` ** (n - 1), `max_backoff`) seconds. With
    `wait_for_ready`, a call made while the daemon cannot be reached waits for it, up to the call's deadline,
    rather than failing at once; nothing is sent before then, so this holds for every RPC (a call without a
    deadline never waits). A lost connection is tried again after `initial_reconnect_backoff` seconds, growing
    to `max_reconnect_backoff`, so a restarted daemon is found within about that long.
    """

    max_attempts: int = _MAX_ATTEMPTS
    initial_backoff: float = 0.1
    max_backoff: float = 1.0
    backoff_multiplier: float = 2.0
    wait_for_ready: bool = True
    initial_reconnect_backoff: float = 0.1
    max_reconnect_backoff: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= _MAX_ATTEMPTS:
            raise ValueError(f"max_attempts must be between 1 and {_MAX_ATTEMPTS}")
        if min(self.initial_backoff, self.max_backoff, self.initial_reconnect_backoff) <= 0:
            raise ValueError("backoffs must be positive")
        if self.backoff_multiplier < 1 or self.max_reconnect_backoff < self.initial_reconnect_backoff:
            raise ValueError("backoffs must not shrink")


def _table(service: str, retried: str, not_retried: str = "") -> dict[str, bool]:
    table = {f"/stord.v1.{service}/{name}": True for name in retried.split()}
    table.update({f"/stord.v1.{service}/{name}": False for name in not_retried.split()})
    return table


# Every RPC of every service, by hand: a test fails when a service gains an RPC that is not listed here,
# and an unlisted method is never retried.
RETRIED_BY_METHOD: dict[str, bool] = {
    # Set and MSet write the same values again (a conditional Set finds its own write and answers False);
    # Delete and Clear find nothing the second time.
    **_table("CacheService", "Get MGet Exists Keys Set Delete MSet Clear"),
    # Append would add the item twice.
    **_table("DatabaseService", "Get MGet Exists Keys GetRange GetLength Set Delete MSet Clear", "Append"),
    # Create makes a second document (or ALREADY_EXISTS for its own id); Update bumps the revision again
    # (ABORTED with an expected revision); Delete answers NOT_FOUND for what it removed; Transact creates
    # and enqueues. Creating an index that exists does nothing.
    **_table(
        "DocumentService",
        "GetDocument ListDocuments CountDocuments CreateIndex",
        "CreateDocument UpdateDocument DeleteDocument Transact",
    ),
    # Enqueue adds the jobs again (a dedupe key is per job, not per call); Dequeue leases more jobs and
    # strands the first lease; Acknowledge and Fail answer FAILED_PRECONDITION once the lease is gone.
    # Extending a lease from now again is harmless.
    **_table(
        "JobQueueService",
        "GetJob ListJobs GetQueueStats ExtendLease",
        "Enqueue Dequeue Acknowledge Fail",
    ),
    # InsertEvents gives events without an id a new one each time, and its answer leaves out the events a
    # repeat finds stored; IngestEvents resends by itself (EventIngestor). TailEvents is retried only until
    # its first message. Upserts, rule updates and retention leave the same state; create, delete and record
    # do not.
    **_table(
        "EventStoreService",
        "GetEvent QueryEvents CountEvents GetSessionTimeline VerifySessionChain TailEvents GetSession"
        " QuerySessions GetAgent ListAgents GetAnalytics GetAlertRule ListAlertRules ListAlertHistory"
        " GetStats UpsertSession UpsertAgent UpdateAlertRule ApplyRetention",
        "InsertEvents IngestEvents CreateAlertRule DeleteAlertRule RecordAlert",
    ),
    # SetAgent is an upsert; DeleteAgent answers deleted=false the second time.
    **_table("AgentStoreService", "GetAgent SearchAgents SetAgent DeleteAgent"),
    # Every write is an upsert by key, or Clear (manifests.proto).
    **_table(
        "ManifestStoreService",
        "GetManifest ListManifestVersions GetHookManifest ListHookManifests GetGType GetTransformer"
        " GetTransformersForVersions GetVersionGraph GetTimescapeMetadata GetStats StoreManifest"
        " StoreHookManifest StoreGType StoreTransformer StoreVersionGraph StoreTimescapeMetadata Clear",
    ),
    **_table("AdminService", "GetInfo"),
    **_table("AlertService", "ListAlertDeliveries"),
}


def all_methods() -> set[str]:
    """Return the full name of every RPC of every stord.v1 service, from the generated descriptors."""
    modules = (admin_pb2, agents_pb2, alerts_pb2, documents_pb2, events_pb2, jobs_pb2, kv_pb2, manifests_pb2)
    return {
        f"/{service.full_name}/{method.name}"
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def service_config(policy: RetryPolicy) -> dict[str, Any]:
    """Return the gRPC service config that retries the idempotent methods of `policy`."""
    if policy.max_attempts == 1:
        return {}
    methods = [method for method in sorted(all_methods()) if RETRIED_BY_METHOD.get(method, False)]
    names = [
        {"service": service, "method": name}
        for service, name in (method.removeprefix("/").split("/") for method in methods)
    ]
    retry = {
        "maxAttempts": policy.max_attempts,
        "initialBackoff": _seconds(policy.initial_backoff),
        "maxBackoff": _seconds(policy.max_backoff),
        "backoffMultiplier": policy.backoff_multiplier,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return {"methodConfig": [{"name": names, "retryPolicy": retry}]}


def channel_options(policy: RetryPolicy | None, options: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Return the channel options that apply `policy` (None: gRPC's defaults), then the caller's `options`.

    A caller's own `grpc.service_config` replaces the client's, since gRPC takes one service config.
    """
    if policy is None:
        return options
    own: list[tuple[str, Any]] = [
        ("grpc.enable_retries", 1),
        ("grpc.initial_reconnect_backoff_ms", round(policy.initial_reconnect_backoff * 1000)),
        ("grpc.max_reconnect_backoff_ms", round(policy.max_reconnect_backoff * 1000)),
    ]
    config = service_config(policy)
    if config and not any(name == "grpc.service_config" for name, _ in options):
        own.append(("grpc.service_config", json.dumps(config)))
    names = {name for name, _ in options}
    return [option for option in own if option[0] not in names] + options

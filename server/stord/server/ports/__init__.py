"""What every contract shares: the domain errors, the clock, capabilities and the Backend protocol.

Each contract's own port lives in its package (`kv.port`, `documents.port`, `jobs.port`, `agents.port`,
`manifests.port`, `transfer.port`); servicers depend on those Protocols only, and backends never see protobuf
or gRPC. A backend signals failure by raising one of the `StoreError` subclasses (`ports._base`), which the
server maps to a gRPC status in one place. The event store's port lives in `events.port`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from stord.server.ports._base import (
    AlreadyExists,
    Clock,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    JsonObject,
    NamespaceOccupied,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    StoreError,
    Unavailable,
    Unimplemented,
    system_clock,
)
from stord.server.ports._capabilities import CONTRACT_CAPABILITIES, Capability

if TYPE_CHECKING:
    from stord.server.agents.port import AgentStore
    from stord.server.documents.port import DocumentStore
    from stord.server.events.port import EventStore
    from stord.server.jobs.port import JobQueueStore
    from stord.server.kv.port import Keyspace, KeyValueStore
    from stord.server.manifests.port import ManifestStore
    from stord.server.transfer.port import TransferStore

__all__ = [
    "CONTRACT_CAPABILITIES",
    "AlreadyExists",
    "Backend",
    "Capability",
    "Clock",
    "Conflict",
    "FailedPrecondition",
    "InvalidArgument",
    "JsonObject",
    "NamespaceOccupied",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "StoreError",
    "Unavailable",
    "Unimplemented",
    "system_clock",
]


class Backend(Protocol):
    """A storage engine: its lifecycle, its health, and the contract stores it serves."""

    @property
    def kind(self) -> str:
        """Name the engine: `memory`, `sqlite`, `postgres` or `redis`."""
        ...

    @property
    def capabilities(self) -> frozenset[Capability]:
        """Name what the engine serves and supports (also `CAPABILITIES` on its class, before it opens)."""
        ...

    async def open(self) -> None:
        """Connect and bring the schema up to date; raise Unavailable when the engine cannot be reached."""
        ...

    async def close(self) -> None:
        """Release connections and threads; safe to call more than once."""
        ...

    async def check(self) -> None:
        """Raise Unavailable when the engine does not answer now."""
        ...

    async def page_token_key(self) -> bytes:
        """Return the key that seals page tokens, the same for every daemon over this engine's data.

        Created on first use, race-free across daemons; the memory engine's lives as long as the process.
        """
        ...

    async def sweep(self) -> int:
        """Delete what expired by now and return how many records went; the daemon calls it periodically.

        Expired records are invisible from the moment they expire; sweeping only reclaims their space.
        """
        ...

    def key_value(self, keyspace: Keyspace) -> KeyValueStore:
        """Return the key-value store of one role."""
        ...

    def events(self) -> EventStore:
        """Return the event store; raise Unimplemented when the engine does not serve it."""
        ...

    def agents(self) -> AgentStore:
        """Return the agent registry; raise Unimplemented when the engine does not serve it."""
        ...

    def manifests(self) -> ManifestStore:
        """Return the manifest store; raise Unimplemented when the engine does not serve it."""
        ...

    def documents(self) -> DocumentStore:
        """Return the document store; raise Unimplemented when the engine does not serve it."""
        ...

    def jobs(self) -> JobQueueStore:
        """Return the job queue; raise Unimplemented when the engine does not serve it."""
        ...

    def transfer(self) -> TransferStore:
        """Return the raw dump and restore of every contract's data; raise Unimplemented where not served."""
        ...

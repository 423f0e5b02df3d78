"""A backend's contract accessors, decided by what it declares: its store, or Unimplemented with the reason.

Every backend builds its stores in `__init__` (`self._documents`, ...); `DeclaredContracts` gives each out
only when the backend's `CAPABILITIES` name the contract, so the declaration the tests read is the one the
daemon acts on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, TypeVar

from stord.server.agents.port import AgentStore
from stord.server.alerts.port import AlertStateStore
from stord.server.documents.port import DocumentStore
from stord.server.events.port import EventStore
from stord.server.jobs.port import JobQueueStore
from stord.server.kv.port import Keyspace, KeyValueStore
from stord.server.manifests.port import ManifestStore
from stord.server.ports import Capability, Unimplemented
from stord.server.transfer.port import TransferStore

__all__ = ["DeclaredContracts"]

_Store = TypeVar("_Store")

_WHAT = {
    Capability.KEY_VALUE: "stord.v1.CacheService and stord.v1.DatabaseService",
    Capability.DOCUMENTS: "stord.v1.DocumentService",
    Capability.JOBS: "stord.v1.JobQueueService",
    Capability.EVENTS: "stord.v1.EventStoreService",
    Capability.AGENTS: "stord.v1.AgentStoreService",
    Capability.MANIFESTS: "stord.v1.ManifestStoreService",
    Capability.TRANSFER: "export and import",
}


class DeclaredContracts:
    """The accessors of the Backend protocol, over the stores the subclass built and its `CAPABILITIES`."""

    CAPABILITIES: ClassVar[frozenset[Capability]]
    UNSERVED: ClassVar[Mapping[Capability, str]] = {}
    """A reason of its own for a contract the backend does not serve (else: which backends do)."""

    # The stores the subclass built in its __init__; a contract it does not serve keeps None.
    _key_value: Mapping[Keyspace, KeyValueStore]
    _documents: DocumentStore | None = None
    _jobs: JobQueueStore | None = None
    _events: EventStore | None = None
    _alerts: AlertStateStore | None = None
    _agents: AgentStore | None = None
    _manifests: ManifestStore | None = None
    _transfer: TransferStore | None = None

    @property
    def kind(self) -> str:
        raise NotImplementedError

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self.CAPABILITIES

    def key_value(self, keyspace: Keyspace) -> KeyValueStore:
        return self._served(Capability.KEY_VALUE, self._key_value[keyspace])

    def documents(self) -> DocumentStore:
        return self._served(Capability.DOCUMENTS, self._documents)

    def jobs(self) -> JobQueueStore:
        return self._served(Capability.JOBS, self._jobs)

    def events(self) -> EventStore:
        return self._served(Capability.EVENTS, self._events)

    def alerts(self) -> AlertStateStore:
        # Alert evaluation is part of the events contract: served wherever events are.
        return self._served(Capability.EVENTS, self._alerts)

    def agents(self) -> AgentStore:
        return self._served(Capability.AGENTS, self._agents)

    def manifests(self) -> ManifestStore:
        return self._served(Capability.MANIFESTS, self._manifests)

    def transfer(self) -> TransferStore:
        return self._served(Capability.TRANSFER, self._transfer)

    def _served(self, capability: Capability, store: _Store | None) -> _Store:
        if store is None or capability not in self.CAPABILITIES:
            raise Unimplemented(self.UNSERVED.get(capability) or self._unserved(capability))
        return store

    def _unserved(self, capability: Capability) -> str:
        from stord.server.backends import KINDS, declared_capabilities  # the registry imports this module

        others = [kind for kind in KINDS if capability in declared_capabilities(kind)]
        alternatives = ", ".join(others[:-1]) + f" or {others[-1]}" if len(others) > 1 else "".join(others)
        return f"the {self.kind} backend does not serve {_WHAT[capability]}; use {alternatives}"

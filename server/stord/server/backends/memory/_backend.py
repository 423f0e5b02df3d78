from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import ClassVar

from stord.server.backends._contracts import DeclaredContracts
from stord.server.backends.memory._agents import MemoryAgentStore
from stord.server.backends.memory._alerts import MemoryAlertStateStore
from stord.server.backends.memory._documents import MemoryDocumentStore
from stord.server.backends.memory._events import MemoryEventStore
from stord.server.backends.memory._jobs import MemoryJobQueueStore
from stord.server.backends.memory._key_value import MemoryKeyValueStore
from stord.server.backends.memory._manifests import MemoryManifestStore
from stord.server.jobs.rules import QueueWakeups
from stord.server.kv.port import Keyspace
from stord.server.ports import (
    CONTRACT_CAPABILITIES,
    Capability,
    Clock,
    system_clock,
)


class MemoryBackend(DeclaredContracts):
    """Keeps everything in process memory; healthy as long as the process runs."""

    def __init__(self, *, clock: Clock = system_clock) -> None:
        self._key_value: dict[Keyspace, MemoryKeyValueStore] = {
            keyspace: MemoryKeyValueStore(clock) for keyspace in Keyspace
        }
        self._agents = MemoryAgentStore(clock)
        self._events = MemoryEventStore(clock)
        self._alerts = MemoryAlertStateStore(self._events)
        self._manifests = MemoryManifestStore(clock)
        wakeups = QueueWakeups()
        self._jobs = MemoryJobQueueStore(clock, wakeups)
        self._documents = MemoryDocumentStore(clock, self._jobs, wakeups)
        self._page_token_key = secrets.token_bytes(32)  # nothing outlives the process, tokens included

    CAPABILITIES: ClassVar[frozenset[Capability]] = (CONTRACT_CAPABILITIES - {Capability.TRANSFER}) | {
        Capability.INJECTABLE_CLOCK
    }
    UNSERVED: ClassVar[Mapping[Capability, str]] = {
        Capability.TRANSFER: "the memory backend lives only inside the process that serves it: there is"
        " nothing to export from or import into; use sqlite or postgres"
    }

    @property
    def kind(self) -> str:
        return "memory"

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def page_token_key(self) -> bytes:
        return self._page_token_key

    async def check(self) -> None:
        pass

    async def sweep(self) -> int:
        return sum(store.delete_expired() for store in self._key_value.values())

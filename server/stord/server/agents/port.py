"""The agent registry and manifest store contracts (DESIGN 4.5, 4.6)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from stord.server.ports._base import JsonObject


class AgentStatus(enum.Enum):
    """Whether an agent is in service."""

    ACTIVE = "active"
    INACTIVE = "inactive"


class AgentVisibility(enum.Enum):
    """Who may read an agent: every caller of its namespace, or its owner only."""

    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True, slots=True)
class StoredAgent:
    """One agent definition.

    `owner` is the principal of the caller that last wrote it, '' for an anonymous one; a PRIVATE agent
    always has an owner (the servicer refuses anonymous PRIVATE writes).
    """

    uri: str
    name: str
    version: str
    status: AgentStatus
    visibility: AgentVisibility
    owner: str
    configuration: JsonObject | None
    update_time: float = 0.0
    """Seconds since the epoch of the last write, by the store's clock; what a writer passes is replaced."""

    def visible_to(self, principal: str) -> bool:
        """Return whether a caller with `principal` ('' when anonymous) may read the agent."""
        return self.visibility is AgentVisibility.PUBLIC or self.owner == principal


@dataclass(frozen=True, slots=True)
class AgentWrite:
    """What a set stored, and whether it created the agent rather than replacing one."""

    agent: StoredAgent
    created: bool


@dataclass(frozen=True, slots=True)
class AgentMatch:
    """One search result and its position in insertion order, which the next page resumes after."""

    position: int
    agent: StoredAgent


class AgentStore(Protocol):
    """Agent definitions by uri, per namespace (DESIGN 4.5). Arguments arrive validated.

    Ownership, the same for every operation: an agent may be written or deleted by the principal that owns
    it, or by anyone when its owner is ''. Search matches an agent when the query is empty, equals its uri,
    or is contained in `fold(name)` or `fold(configuration_text(configuration))` after folding the query too
    (`stord.server.agents.search`), so the rule is computed once, in Python, for every backend.
    """

    async def get(self, namespace: str, uri: str) -> StoredAgent | None:
        """Return the agent stored under `uri`, whoever may read it (the caller checks `visible_to`)."""
        ...

    async def set(self, namespace: str, agent: StoredAgent) -> AgentWrite:
        """Create or replace the agent, stamped with the store's clock; `agent.owner` is the writer.

        Raise PermissionDenied, changing nothing, when the uri holds an agent owned by another principal.
        A replaced agent keeps its position in insertion order; a new one goes last.
        """
        ...

    async def delete(self, namespace: str, uri: str, *, principal: str) -> bool:
        """Remove the agent; False when there was none. PermissionDenied when another principal owns it."""
        ...

    async def search(
        self, namespace: str, query: str, *, principal: str, after: int | None, limit: int
    ) -> list[AgentMatch]:
        """Return up to `limit` matches `principal` may read, positioned after `after`, in insertion order."""
        ...


@dataclass(frozen=True, slots=True)
class HandlerManifestRecord:
    """One version of a handler's manifest: the keys the store orders by, and the rest as a document."""

    handler_id: str
    version: str
    created_at: int
    """Nanoseconds since the epoch. The latest version has the greatest (created_at, version)."""
    document: JsonObject


@dataclass(frozen=True, slots=True)
class TransformerRecord:
    """A transformer: the keys the store looks it up by, and the whole transformer as a document."""

    id: str
    handler_id: str
    from_version: str
    to_version: str
    document: JsonObject


class ManifestDocumentKind(enum.Enum):
    """The manifest records that are only stored, read and listed by key (a `DocumentKey`)."""

    HOOK_MANIFEST = "hook_manifest"
    """Keyed by (handler_id, '')."""
    GTYPE = "gtype"
    """Keyed by (ref, '')."""
    VERSION_GRAPH = "version_graph"
    """Keyed by (handler_id, '')."""
    TIMESCAPE_METADATA = "timescape_metadata"
    """Keyed by (handler_id, version)."""


DocumentKey = tuple[str, str]
"""The key of a manifest document: an id and a version, the version '' for kinds keyed by the id alone."""


@dataclass(frozen=True, slots=True)
class ManifestStats:
    """How many records of each kind a namespace holds; `manifests` counts every version."""

    manifests: int
    hook_manifests: int
    gtypes: int
    transformers: int
    version_graphs: int
    timescape_metadata: int


class ManifestStore(Protocol):
    """Handler manifests and what belongs to them, per namespace (DESIGN 4.6). Arguments arrive validated.

    Every put replaces the record under the same key whole. Documents are JSON objects the store keeps as
    given and never looks into.
    """

    async def put_manifest(
        self, namespace: str, handler_id: str, version: str, document: JsonObject, *, created_at: int | None
    ) -> int:
        """Store one manifest version; return its created_at: the one given, or now by the store's clock."""
        ...

    async def get_manifest(
        self, namespace: str, handler_id: str, version: str | None
    ) -> HandlerManifestRecord | None:
        """Return one version, or with `version` None the latest by (created_at, version); None if absent."""
        ...

    async def list_manifests(
        self, namespace: str, handler_id: str, *, after: tuple[int, str] | None, limit: int
    ) -> list[HandlerManifestRecord]:
        """Return up to `limit` versions above (created_at, version) `after`, ascending by both."""
        ...

    async def put_transformer(self, namespace: str, transformer: TransformerRecord) -> None:
        """Store a transformer under its id."""
        ...

    async def get_transformer(self, namespace: str, transformer_id: str) -> TransformerRecord | None:
        """Return the transformer with that id, None if absent."""
        ...

    async def transformers_between(
        self, namespace: str, handler_id: str, from_version: str, to_version: str
    ) -> list[TransformerRecord]:
        """Return the handler's transformers with exactly these versions, by id ascending."""
        ...

    async def put_document(
        self, namespace: str, kind: ManifestDocumentKind, key: DocumentKey, document: JsonObject
    ) -> None:
        """Store a document of one kind under its key."""
        ...

    async def get_document(
        self, namespace: str, kind: ManifestDocumentKind, key: DocumentKey
    ) -> JsonObject | None:
        """Return the document of one kind under a key, None if absent."""
        ...

    async def list_documents(
        self, namespace: str, kind: ManifestDocumentKind, *, after: DocumentKey | None, limit: int
    ) -> list[tuple[DocumentKey, JsonObject]]:
        """Return up to `limit` documents of one kind with keys above `after`, ascending by code point."""
        ...

    async def clear(self, namespace: str) -> None:
        """Remove every record of every kind in the namespace."""
        ...

    async def stats(self, namespace: str) -> ManifestStats:
        """Count the namespace's records of each kind."""
        ...

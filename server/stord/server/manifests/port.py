"""The manifest store contract (DESIGN 4.6): handler manifests by version, hooks, GTypes, transformers."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from stord.server.ports._base import JsonObject


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

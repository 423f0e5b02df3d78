from __future__ import annotations

from dataclasses import dataclass, field

from stord.server.manifests.port import (
    DocumentKey,
    HandlerManifestRecord,
    ManifestDocumentKind,
    ManifestStats,
    TransformerRecord,
)
from stord.server.ports import Clock, JsonObject

# Every method runs to completion without awaiting, so each is atomic on the event loop and needs no lock.


def _order(record: HandlerManifestRecord) -> tuple[int, str]:
    return record.created_at, record.version


@dataclass(slots=True)
class _Namespace:
    manifests: dict[str, dict[str, HandlerManifestRecord]] = field(default_factory=dict)
    """handler_id -> version -> manifest."""
    transformers: dict[str, TransformerRecord] = field(default_factory=dict)
    documents: dict[ManifestDocumentKind, dict[DocumentKey, JsonObject]] = field(
        default_factory=lambda: {kind: {} for kind in ManifestDocumentKind}
    )


_EMPTY = _Namespace()
"""What reads see of a namespace that holds nothing; never written to."""


class MemoryManifestStore:
    """Manifests and their companions in dicts, one set per namespace."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._namespaces: dict[str, _Namespace] = {}

    def _space(self, namespace: str) -> _Namespace:
        return self._namespaces.setdefault(namespace, _Namespace())

    def _view(self, namespace: str) -> _Namespace:
        return self._namespaces.get(namespace) or _EMPTY

    async def put_manifest(
        self, namespace: str, handler_id: str, version: str, document: JsonObject, *, created_at: int | None
    ) -> int:
        if created_at is None:
            created_at = round(self._clock() * 1e9)
        versions = self._space(namespace).manifests.setdefault(handler_id, {})
        versions[version] = HandlerManifestRecord(handler_id, version, created_at, document)
        return created_at

    async def get_manifest(
        self, namespace: str, handler_id: str, version: str | None
    ) -> HandlerManifestRecord | None:
        versions = self._view(namespace).manifests.get(handler_id, {})
        if version is not None:
            return versions.get(version)
        return max(versions.values(), key=_order, default=None)

    async def list_manifests(
        self, namespace: str, handler_id: str, *, after: tuple[int, str] | None, limit: int
    ) -> list[HandlerManifestRecord]:
        ordered = sorted(self._view(namespace).manifests.get(handler_id, {}).values(), key=_order)
        return [record for record in ordered if after is None or _order(record) > after][:limit]

    async def put_transformer(self, namespace: str, transformer: TransformerRecord) -> None:
        self._space(namespace).transformers[transformer.id] = transformer

    async def get_transformer(self, namespace: str, transformer_id: str) -> TransformerRecord | None:
        return self._view(namespace).transformers.get(transformer_id)

    async def transformers_between(
        self, namespace: str, handler_id: str, from_version: str, to_version: str
    ) -> list[TransformerRecord]:
        return sorted(
            (
                transformer
                for transformer in self._view(namespace).transformers.values()
                if (transformer.handler_id, transformer.from_version, transformer.to_version)
                == (handler_id, from_version, to_version)
            ),
            key=lambda transformer: transformer.id,
        )

    async def put_document(
        self, namespace: str, kind: ManifestDocumentKind, key: DocumentKey, document: JsonObject
    ) -> None:
        self._space(namespace).documents[kind][key] = document

    async def get_document(
        self, namespace: str, kind: ManifestDocumentKind, key: DocumentKey
    ) -> JsonObject | None:
        return self._view(namespace).documents[kind].get(key)

    async def list_documents(
        self, namespace: str, kind: ManifestDocumentKind, *, after: DocumentKey | None, limit: int
    ) -> list[tuple[DocumentKey, JsonObject]]:
        documents = self._view(namespace).documents[kind]
        keys = sorted(key for key in documents if after is None or key > after)[:limit]
        return [(key, documents[key]) for key in keys]

    async def clear(self, namespace: str) -> None:
        self._namespaces.pop(namespace, None)

    async def stats(self, namespace: str) -> ManifestStats:
        space = self._view(namespace)
        documents = space.documents
        return ManifestStats(
            manifests=sum(len(versions) for versions in space.manifests.values()),
            hook_manifests=len(documents[ManifestDocumentKind.HOOK_MANIFEST]),
            gtypes=len(documents[ManifestDocumentKind.GTYPE]),
            transformers=len(space.transformers),
            version_graphs=len(documents[ManifestDocumentKind.VERSION_GRAPH]),
            timescape_metadata=len(documents[ManifestDocumentKind.TIMESCAPE_METADATA]),
        )

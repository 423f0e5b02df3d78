"""Manifests: the ManifestStoreService contract (handler manifests by version, hooks, GTypes, ...).

`port` is the store Protocol, `service` the servicer, `checks` what is verified before storing.
"""

from stord.server.manifests.port import (
    DocumentKey,
    HandlerManifestRecord,
    ManifestDocumentKind,
    ManifestStats,
    ManifestStore,
    TransformerRecord,
)

__all__ = [
    "DocumentKey",
    "HandlerManifestRecord",
    "ManifestDocumentKind",
    "ManifestStats",
    "ManifestStore",
    "TransformerRecord",
]

"""ManifestStoreService (DESIGN 4.6) over the ManifestStore port, reading manifests through the cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from stord.server.manifests import checks
from stord.server.manifests.port import (
    HandlerManifestRecord,
    ManifestDocumentKind,
    ManifestStore,
    TransformerRecord,
)
from stord.server.metrics import Metrics
from stord.server.ports import Backend, InvalidArgument, NotFound
from stord.server.read_cache import CachedManifestStore, read_cache_for
from stord.server.rpc import calls, message_json
from stord.server.rpc import validate as check
from stord.server.rpc.page_tokens import PageTokens
from stord.v1 import manifests_pb2 as pb
from stord.v1 import manifests_pb2_grpc

__all__ = ["ManifestStoreServicer", "manifest_store_servicer"]

Context = grpc.aio.ServicerContext[Any, Any]
_M = TypeVar("_M", bound=Message)

_HOOKS = ManifestDocumentKind.HOOK_MANIFEST
_GTYPES = ManifestDocumentKind.GTYPE
_GRAPHS = ManifestDocumentKind.VERSION_GRAPH
_TIMESCAPE = ManifestDocumentKind.TIMESCAPE_METADATA


def manifest_store_servicer(
    database: Backend, cache: Backend, metrics: Metrics | None, tokens: PageTokens
) -> ManifestStoreServicer:
    """Serve the database's manifests, through the cache role's store when it is shared (`read_cache_for`)."""
    store = database.manifests()
    meter = None if metrics is None else lambda: metrics.read_cache("manifests")
    read_cache = read_cache_for(database, cache, meter)
    return ManifestStoreServicer(
        store if read_cache is None else CachedManifestStore(store, read_cache), tokens
    )


def _manifest(record: HandlerManifestRecord) -> pb.HandlerManifest:
    manifest = message_json.from_document(record.document, pb.HandlerManifest())
    manifest.create_time.CopyFrom(check.timestamp_from_nanoseconds(record.created_at))
    return manifest


def _transformer(record: TransformerRecord) -> pb.Transformer:
    return message_json.from_document(record.document, pb.Transformer())


class ManifestStoreServicer(manifests_pb2_grpc.ManifestStoreServiceServicer):
    """Handler manifests by (handler_id, version) and their companions by key."""

    def __init__(self, store: ManifestStore, tokens: PageTokens) -> None:
        self._store = store
        self._tokens = tokens

    async def StoreManifest(
        self, request: pb.ManifestStoreServiceStoreManifestRequest, context: Context
    ) -> pb.ManifestStoreServiceStoreManifestResponse:
        if not request.HasField("manifest"):
            raise InvalidArgument("manifest", "is required")
        manifest = request.manifest
        checks.check_handler_manifest(manifest, "manifest")
        created_at = None
        if manifest.HasField("create_time"):
            created_at = check.nanoseconds(manifest.create_time, "manifest.create_time")
        # The create_time lives beside the document, where the store orders by it.
        body = pb.HandlerManifest()
        body.CopyFrom(manifest)
        body.ClearField("create_time")
        stored_at = await self._store.put_manifest(
            calls.namespace(),
            manifest.handler_id,
            manifest.version,
            message_json.to_document(body, "manifest"),
            created_at=created_at,
        )
        return pb.ManifestStoreServiceStoreManifestResponse(
            create_time=check.timestamp_from_nanoseconds(stored_at)
        )

    async def GetManifest(
        self, request: pb.ManifestStoreServiceGetManifestRequest, context: Context
    ) -> pb.ManifestStoreServiceGetManifestResponse:
        handler_id = check.key(request.handler_id, "handler_id")
        version = check.key(request.version, "version") if request.HasField("version") else None
        record = await self._store.get_manifest(calls.namespace(), handler_id, version)
        if record is None:
            which = "any version" if version is None else f"version {version!r}"
            raise NotFound(f"handler {handler_id!r} has no manifest of {which}")
        return pb.ManifestStoreServiceGetManifestResponse(manifest=_manifest(record))

    async def ListManifestVersions(
        self, request: pb.ManifestStoreServiceListManifestVersionsRequest, context: Context
    ) -> pb.ManifestStoreServiceListManifestVersionsResponse:
        handler_id = check.key(request.handler_id, "handler_id")
        limit = check.page_size(request.page_size)
        # The creation time goes as seconds and nanoseconds: nanoseconds since the epoch need 68 bits.
        position = self._tokens.resume(request, calls.namespace(), int, int, str)
        after = None
        if position is not None:
            seconds, nanos, version = position
            after = (int(seconds) * 1_000_000_000 + int(nanos), str(version))
        # One extra record tells whether another page follows.
        records = await self._store.list_manifests(
            calls.namespace(), handler_id, after=after, limit=limit + 1
        )
        token = ""
        if len(records) > limit:
            records = records[:limit]
            seconds, nanos = divmod(records[-1].created_at, 1_000_000_000)
            token = self._tokens.issue(request, calls.namespace(), seconds, nanos, records[-1].version)
        return pb.ManifestStoreServiceListManifestVersionsResponse(
            manifests=[_manifest(record) for record in records], next_page_token=token
        )

    async def StoreHookManifest(
        self, request: pb.ManifestStoreServiceStoreHookManifestRequest, context: Context
    ) -> pb.ManifestStoreServiceStoreHookManifestResponse:
        await self._put_document(
            request, "hook_manifest", _HOOKS, checks.check_hook_manifest, lambda hook: (hook.handler_id, "")
        )
        return pb.ManifestStoreServiceStoreHookManifestResponse()

    async def GetHookManifest(
        self, request: pb.ManifestStoreServiceGetHookManifestRequest, context: Context
    ) -> pb.ManifestStoreServiceGetHookManifestResponse:
        handler_id = check.key(request.handler_id, "handler_id")
        missing = f"handler {handler_id!r} has no hook manifest"
        manifest = await self._get_document(_HOOKS, (handler_id, ""), pb.HookManifest(), missing)
        return pb.ManifestStoreServiceGetHookManifestResponse(hook_manifest=manifest)

    async def ListHookManifests(
        self, request: pb.ManifestStoreServiceListHookManifestsRequest, context: Context
    ) -> pb.ManifestStoreServiceListHookManifestsResponse:
        limit = check.page_size(request.page_size)
        position = self._tokens.resume(request, calls.namespace(), str)
        found = await self._store.list_documents(
            calls.namespace(),
            _HOOKS,
            after=None if position is None else (str(position[0]), ""),
            limit=limit + 1,
        )
        token = ""
        if len(found) > limit:
            found = found[:limit]
            token = self._tokens.issue(request, calls.namespace(), found[-1][0][0])
        manifests = [message_json.from_document(document, pb.HookManifest()) for _, document in found]
        return pb.ManifestStoreServiceListHookManifestsResponse(
            hook_manifests=manifests, next_page_token=token
        )

    async def StoreGType(
        self, request: pb.ManifestStoreServiceStoreGTypeRequest, context: Context
    ) -> pb.ManifestStoreServiceStoreGTypeResponse:
        await self._put_document(request, "gtype", _GTYPES, checks.check_gtype, lambda gtype: (gtype.ref, ""))
        return pb.ManifestStoreServiceStoreGTypeResponse()

    async def GetGType(
        self, request: pb.ManifestStoreServiceGetGTypeRequest, context: Context
    ) -> pb.ManifestStoreServiceGetGTypeResponse:
        ref = check.key(request.ref, "ref")
        gtype = await self._get_document(_GTYPES, (ref, ""), pb.GType(), f"no GType {ref!r}")
        return pb.ManifestStoreServiceGetGTypeResponse(gtype=gtype)

    async def StoreTransformer(
        self, request: pb.ManifestStoreServiceStoreTransformerRequest, context: Context
    ) -> pb.ManifestStoreServiceStoreTransformerResponse:
        if not request.HasField("transformer"):
            raise InvalidArgument("transformer", "is required")
        transformer = request.transformer
        checks.check_transformer(transformer, "transformer")
        record = TransformerRecord(
            id=transformer.id,
            handler_id=transformer.handler_id,
            from_version=transformer.from_version,
            to_version=transformer.to_version,
            document=message_json.to_document(transformer, "transformer"),
        )
        await self._store.put_transformer(calls.namespace(), record)
        return pb.ManifestStoreServiceStoreTransformerResponse()

    async def GetTransformer(
        self, request: pb.ManifestStoreServiceGetTransformerRequest, context: Context
    ) -> pb.ManifestStoreServiceGetTransformerResponse:
        transformer_id = check.key(request.id, "id")
        record = await self._store.get_transformer(calls.namespace(), transformer_id)
        if record is None:
            raise NotFound(f"no transformer {transformer_id!r}")
        return pb.ManifestStoreServiceGetTransformerResponse(transformer=_transformer(record))

    async def GetTransformersForVersions(
        self, request: pb.ManifestStoreServiceGetTransformersForVersionsRequest, context: Context
    ) -> pb.ManifestStoreServiceGetTransformersForVersionsResponse:
        records = await self._store.transformers_between(
            calls.namespace(),
            check.key(request.handler_id, "handler_id"),
            check.key(request.from_version, "from_version"),
            check.key(request.to_version, "to_version"),
        )
        return pb.ManifestStoreServiceGetTransformersForVersionsResponse(
            transformers=[_transformer(record) for record in records]
        )

    async def StoreVersionGraph(
        self, request: pb.ManifestStoreServiceStoreVersionGraphRequest, context: Context
    ) -> pb.ManifestStoreServiceStoreVersionGraphResponse:
        await self._put_document(
            request,
            "version_graph",
            _GRAPHS,
            checks.check_version_graph,
            lambda graph: (graph.handler_id, ""),
        )
        return pb.ManifestStoreServiceStoreVersionGraphResponse()

    async def GetVersionGraph(
        self, request: pb.ManifestStoreServiceGetVersionGraphRequest, context: Context
    ) -> pb.ManifestStoreServiceGetVersionGraphResponse:
        handler_id = check.key(request.handler_id, "handler_id")
        missing = f"handler {handler_id!r} has no version graph"
        graph = await self._get_document(_GRAPHS, (handler_id, ""), pb.VersionGraph(), missing)
        return pb.ManifestStoreServiceGetVersionGraphResponse(version_graph=graph)

    async def StoreTimescapeMetadata(
        self, request: pb.ManifestStoreServiceStoreTimescapeMetadataRequest, context: Context
    ) -> pb.ManifestStoreServiceStoreTimescapeMetadataResponse:
        await self._put_document(
            request,
            "timescape_metadata",
            _TIMESCAPE,
            checks.check_timescape_metadata,
            lambda metadata: (metadata.handler_id, metadata.version),
        )
        return pb.ManifestStoreServiceStoreTimescapeMetadataResponse()

    async def GetTimescapeMetadata(
        self, request: pb.ManifestStoreServiceGetTimescapeMetadataRequest, context: Context
    ) -> pb.ManifestStoreServiceGetTimescapeMetadataResponse:
        handler_id = check.key(request.handler_id, "handler_id")
        version = check.key(request.version, "version")
        missing = f"handler {handler_id!r} has no Timescape metadata for version {version!r}"
        metadata = await self._get_document(
            _TIMESCAPE, (handler_id, version), pb.TimescapeMetadata(), missing
        )
        return pb.ManifestStoreServiceGetTimescapeMetadataResponse(timescape_metadata=metadata)

    async def _put_document(
        self,
        request: Message,
        field: str,
        kind: ManifestDocumentKind,
        check_message: Callable[[Any, str], None],
        key: Callable[[Any], tuple[str, str]],
    ) -> None:
        """Check the request's `field` (required) and store it as a document of `kind` under its `key`."""
        if not request.HasField(field):
            raise InvalidArgument(field, "is required")
        message = getattr(request, field)
        check_message(message, field)
        document = message_json.to_document(message, field)
        await self._store.put_document(calls.namespace(), kind, key(message), document)

    async def _get_document(
        self, kind: ManifestDocumentKind, key: tuple[str, str], empty: _M, missing: str
    ) -> _M:
        """Return the document of `kind` under `key` read into `empty`; NOT_FOUND saying `missing` if none."""
        document = await self._store.get_document(calls.namespace(), kind, key)
        if document is None:
            raise NotFound(missing)
        return message_json.from_document(document, empty)

    async def Clear(
        self, request: pb.ManifestStoreServiceClearRequest, context: Context
    ) -> pb.ManifestStoreServiceClearResponse:
        await self._store.clear(calls.namespace())
        return pb.ManifestStoreServiceClearResponse()

    async def GetStats(
        self, request: pb.ManifestStoreServiceGetStatsRequest, context: Context
    ) -> pb.ManifestStoreServiceGetStatsResponse:
        stats = await self._store.stats(calls.namespace())
        return pb.ManifestStoreServiceGetStatsResponse(
            manifest_count=stats.manifests,
            hook_manifest_count=stats.hook_manifests,
            gtype_count=stats.gtypes,
            transformer_count=stats.transformers,
            version_graph_count=stats.version_graphs,
            timescape_metadata_count=stats.timescape_metadata,
        )

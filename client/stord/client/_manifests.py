"""ManifestStoreService: `Client.manifests` and its asyncio twin `AsyncClient.manifests`.

Records go in and come out as the generated messages of `stord.v1.manifests_pb2` (`HandlerManifest`,
`HookManifest`, `GType`, `Transformer`, `VersionGraph`, `TimescapeMetadata`); a missing record reads as None.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from stord.client.errors import NotFound
from stord.v1 import manifests_pb2 as pb
from stord.v1 import manifests_pb2_grpc

if TYPE_CHECKING:
    from stord.client import _async, _sync

__all__ = ["AsyncManifests", "Manifests"]


class Manifests:
    """Handler manifests by (handler_id, version) and their companions. Reached as `Client.manifests`."""

    def __init__(self, channel: grpc.Channel, call: _sync._Caller) -> None:
        self._stub = manifests_pb2_grpc.ManifestStoreServiceStub(channel)
        self._call = call

    def store_manifest(self, manifest: pb.HandlerManifest) -> Timestamp:
        """Store a manifest version; return its create_time (the daemon's clock when it had none)."""
        request = pb.ManifestStoreServiceStoreManifestRequest(manifest=manifest)
        return self._call(self._stub.StoreManifest, request).create_time

    def get_manifest(self, handler_id: str, version: str | None = None) -> pb.HandlerManifest | None:
        """Return one version of a handler's manifest, or with no version its latest; None if absent."""
        request = pb.ManifestStoreServiceGetManifestRequest(handler_id=handler_id, version=version)
        try:
            return self._call(self._stub.GetManifest, request).manifest
        except NotFound:
            return None

    def list_manifest_versions(self, handler_id: str, *, page_size: int = 0) -> Iterator[pb.HandlerManifest]:
        """Yield every version of a handler's manifest, oldest first, fetching pages as needed."""
        token = ""
        while True:
            request = pb.ManifestStoreServiceListManifestVersionsRequest(
                handler_id=handler_id, page_size=page_size, page_token=token
            )
            response = self._call(self._stub.ListManifestVersions, request)
            yield from response.manifests
            token = response.next_page_token
            if not token:
                return

    def store_hook_manifest(self, hook_manifest: pb.HookManifest) -> None:
        """Store the hook manifest of a handler."""
        request = pb.ManifestStoreServiceStoreHookManifestRequest(hook_manifest=hook_manifest)
        self._call(self._stub.StoreHookManifest, request)

    def get_hook_manifest(self, handler_id: str) -> pb.HookManifest | None:
        """Return the hook manifest of a handler, None if absent."""
        request = pb.ManifestStoreServiceGetHookManifestRequest(handler_id=handler_id)
        try:
            return self._call(self._stub.GetHookManifest, request).hook_manifest
        except NotFound:
            return None

    def list_hook_manifests(self, *, page_size: int = 0) -> Iterator[pb.HookManifest]:
        """Yield every hook manifest by handler_id, fetching pages as needed."""
        token = ""
        while True:
            request = pb.ManifestStoreServiceListHookManifestsRequest(page_size=page_size, page_token=token)
            response = self._call(self._stub.ListHookManifests, request)
            yield from response.hook_manifests
            token = response.next_page_token
            if not token:
                return

    def store_gtype(self, gtype: pb.GType) -> None:
        """Store a type schema under its ref."""
        self._call(self._stub.StoreGType, pb.ManifestStoreServiceStoreGTypeRequest(gtype=gtype))

    def get_gtype(self, ref: str) -> pb.GType | None:
        """Return a type schema, None if absent."""
        try:
            return self._call(self._stub.GetGType, pb.ManifestStoreServiceGetGTypeRequest(ref=ref)).gtype
        except NotFound:
            return None

    def store_transformer(self, transformer: pb.Transformer) -> None:
        """Store a transformer under its id."""
        request = pb.ManifestStoreServiceStoreTransformerRequest(transformer=transformer)
        self._call(self._stub.StoreTransformer, request)

    def get_transformer(self, transformer_id: str) -> pb.Transformer | None:
        """Return a transformer, None if absent."""
        request = pb.ManifestStoreServiceGetTransformerRequest(id=transformer_id)
        try:
            return self._call(self._stub.GetTransformer, request).transformer
        except NotFound:
            return None

    def get_transformers_for_versions(
        self, handler_id: str, from_version: str, to_version: str
    ) -> list[pb.Transformer]:
        """Return the handler's transformers from exactly `from_version` to exactly `to_version`, by id."""
        request = pb.ManifestStoreServiceGetTransformersForVersionsRequest(
            handler_id=handler_id, from_version=from_version, to_version=to_version
        )
        return list(self._call(self._stub.GetTransformersForVersions, request).transformers)

    def store_version_graph(self, version_graph: pb.VersionGraph) -> None:
        """Store the version graph of a handler."""
        request = pb.ManifestStoreServiceStoreVersionGraphRequest(version_graph=version_graph)
        self._call(self._stub.StoreVersionGraph, request)

    def get_version_graph(self, handler_id: str) -> pb.VersionGraph | None:
        """Return the version graph of a handler, None if absent."""
        request = pb.ManifestStoreServiceGetVersionGraphRequest(handler_id=handler_id)
        try:
            return self._call(self._stub.GetVersionGraph, request).version_graph
        except NotFound:
            return None

    def store_timescape_metadata(self, timescape_metadata: pb.TimescapeMetadata) -> None:
        """Store the Timescape metadata of a handler version."""
        request = pb.ManifestStoreServiceStoreTimescapeMetadataRequest(timescape_metadata=timescape_metadata)
        self._call(self._stub.StoreTimescapeMetadata, request)

    def get_timescape_metadata(self, handler_id: str, version: str) -> pb.TimescapeMetadata | None:
        """Return the Timescape metadata of a handler version, None if absent."""
        request = pb.ManifestStoreServiceGetTimescapeMetadataRequest(handler_id=handler_id, version=version)
        try:
            return self._call(self._stub.GetTimescapeMetadata, request).timescape_metadata
        except NotFound:
            return None

    def clear(self) -> None:
        """Remove every manifest record of this client's namespace."""
        self._call(self._stub.Clear, pb.ManifestStoreServiceClearRequest())

    def get_stats(self) -> pb.ManifestStoreServiceGetStatsResponse:
        """Count the records of each kind in this client's namespace."""
        return self._call(self._stub.GetStats, pb.ManifestStoreServiceGetStatsRequest())


class AsyncManifests:
    """Handler manifests by (handler_id, version) and their companions. Reached as `AsyncClient.manifests`."""

    def __init__(self, channel: grpc.aio.Channel, call: _async._Caller) -> None:
        self._stub = manifests_pb2_grpc.ManifestStoreServiceStub(channel)
        self._call = call

    async def store_manifest(self, manifest: pb.HandlerManifest) -> Timestamp:
        """Store a manifest version; return its create_time (the daemon's clock when it had none)."""
        request = pb.ManifestStoreServiceStoreManifestRequest(manifest=manifest)
        return (await self._call(self._stub.StoreManifest, request)).create_time

    async def get_manifest(self, handler_id: str, version: str | None = None) -> pb.HandlerManifest | None:
        """Return one version of a handler's manifest, or with no version its latest; None if absent."""
        request = pb.ManifestStoreServiceGetManifestRequest(handler_id=handler_id, version=version)
        try:
            return (await self._call(self._stub.GetManifest, request)).manifest
        except NotFound:
            return None

    async def list_manifest_versions(
        self, handler_id: str, *, page_size: int = 0
    ) -> AsyncIterator[pb.HandlerManifest]:
        """Yield every version of a handler's manifest, oldest first, fetching pages as needed."""
        token = ""
        while True:
            request = pb.ManifestStoreServiceListManifestVersionsRequest(
                handler_id=handler_id, page_size=page_size, page_token=token
            )
            response = await self._call(self._stub.ListManifestVersions, request)
            for manifest in response.manifests:
                yield manifest
            token = response.next_page_token
            if not token:
                return

    async def store_hook_manifest(self, hook_manifest: pb.HookManifest) -> None:
        """Store the hook manifest of a handler."""
        request = pb.ManifestStoreServiceStoreHookManifestRequest(hook_manifest=hook_manifest)
        await self._call(self._stub.StoreHookManifest, request)

    async def get_hook_manifest(self, handler_id: str) -> pb.HookManifest | None:
        """Return the hook manifest of a handler, None if absent."""
        request = pb.ManifestStoreServiceGetHookManifestRequest(handler_id=handler_id)
        try:
            return (await self._call(self._stub.GetHookManifest, request)).hook_manifest
        except NotFound:
            return None

    async def list_hook_manifests(self, *, page_size: int = 0) -> AsyncIterator[pb.HookManifest]:
        """Yield every hook manifest by handler_id, fetching pages as needed."""
        token = ""
        while True:
            request = pb.ManifestStoreServiceListHookManifestsRequest(page_size=page_size, page_token=token)
            response = await self._call(self._stub.ListHookManifests, request)
            for hook_manifest in response.hook_manifests:
                yield hook_manifest
            token = response.next_page_token
            if not token:
                return

    async def store_gtype(self, gtype: pb.GType) -> None:
        """Store a type schema under its ref."""
        await self._call(self._stub.StoreGType, pb.ManifestStoreServiceStoreGTypeRequest(gtype=gtype))

    async def get_gtype(self, ref: str) -> pb.GType | None:
        """Return a type schema, None if absent."""
        request = pb.ManifestStoreServiceGetGTypeRequest(ref=ref)
        try:
            return (await self._call(self._stub.GetGType, request)).gtype
        except NotFound:
            return None

    async def store_transformer(self, transformer: pb.Transformer) -> None:
        """Store a transformer under its id."""
        request = pb.ManifestStoreServiceStoreTransformerRequest(transformer=transformer)
        await self._call(self._stub.StoreTransformer, request)

    async def get_transformer(self, transformer_id: str) -> pb.Transformer | None:
        """Return a transformer, None if absent."""
        request = pb.ManifestStoreServiceGetTransformerRequest(id=transformer_id)
        try:
            return (await self._call(self._stub.GetTransformer, request)).transformer
        except NotFound:
            return None

    async def get_transformers_for_versions(
        self, handler_id: str, from_version: str, to_version: str
    ) -> list[pb.Transformer]:
        """Return the handler's transformers from exactly `from_version` to exactly `to_version`, by id."""
        request = pb.ManifestStoreServiceGetTransformersForVersionsRequest(
            handler_id=handler_id, from_version=from_version, to_version=to_version
        )
        return list((await self._call(self._stub.GetTransformersForVersions, request)).transformers)

    async def store_version_graph(self, version_graph: pb.VersionGraph) -> None:
        """Store the version graph of a handler."""
        request = pb.ManifestStoreServiceStoreVersionGraphRequest(version_graph=version_graph)
        await self._call(self._stub.StoreVersionGraph, request)

    async def get_version_graph(self, handler_id: str) -> pb.VersionGraph | None:
        """Return the version graph of a handler, None if absent."""
        request = pb.ManifestStoreServiceGetVersionGraphRequest(handler_id=handler_id)
        try:
            return (await self._call(self._stub.GetVersionGraph, request)).version_graph
        except NotFound:
            return None

    async def store_timescape_metadata(self, timescape_metadata: pb.TimescapeMetadata) -> None:
        """Store the Timescape metadata of a handler version."""
        request = pb.ManifestStoreServiceStoreTimescapeMetadataRequest(timescape_metadata=timescape_metadata)
        await self._call(self._stub.StoreTimescapeMetadata, request)

    async def get_timescape_metadata(self, handler_id: str, version: str) -> pb.TimescapeMetadata | None:
        """Return the Timescape metadata of a handler version, None if absent."""
        request = pb.ManifestStoreServiceGetTimescapeMetadataRequest(handler_id=handler_id, version=version)
        try:
            return (await self._call(self._stub.GetTimescapeMetadata, request)).timescape_metadata
        except NotFound:
            return None

    async def clear(self) -> None:
        """Remove every manifest record of this client's namespace."""
        await self._call(self._stub.Clear, pb.ManifestStoreServiceClearRequest())

    async def get_stats(self) -> pb.ManifestStoreServiceGetStatsResponse:
        """Count the records of each kind in this client's namespace."""
        return await self._call(self._stub.GetStats, pb.ManifestStoreServiceGetStatsRequest())

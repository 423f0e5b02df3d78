"""Stateful fuzzing of manifests: versions at boundary times, read back, listed page by page."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from stord.v1 import manifests_pb2 as pb
from stord.v1 import manifests_pb2_grpc
from tests.conftest import DATABASE_BACKENDS, Daemons
from tests.fuzz._edges import FUZZ_SETTINGS, Caller, durations, int32s, mutated_token, texts, timestamps

HANDLERS = st.sampled_from(["h1", "h2", "ключ"])
VERSIONS = st.one_of(st.sampled_from(["1", "2", "1.0.0-ß"]), texts(1024))


class ManifestMachine(RuleBasedStateMachine):
    target = ""

    def __init__(self) -> None:
        super().__init__()
        self.call = Caller(self.target)
        self.stub = manifests_pb2_grpc.ManifestStoreServiceStub(self.call.channel)
        self.manifests: dict[tuple[str, str], pb.HandlerManifest] = {}
        self.hooks: dict[str, pb.HookManifest] = {}

    def teardown(self) -> None:
        self.call.close()

    @rule(handler_id=HANDLERS, version=VERSIONS, created=st.one_of(st.none(), timestamps()), path=texts(1024))
    def store_manifest(self, handler_id: str, version: str, created: Any, path: str) -> None:
        manifest = pb.HandlerManifest(handler_id=handler_id, version=version, path=path, create_time=created)
        answer = self.call(
            self.stub.StoreManifest, pb.ManifestStoreServiceStoreManifestRequest(manifest=manifest)
        )
        if isinstance(answer, pb.ManifestStoreServiceStoreManifestResponse):
            manifest.create_time.CopyFrom(answer.create_time)
            self.manifests[(handler_id, version)] = manifest

    @rule(handler_id=HANDLERS, timeout=durations(), retries=int32s(), hook_id=texts(256))
    def store_hook_manifest(self, handler_id: str, timeout: Any, retries: int, hook_id: str) -> None:
        hook = pb.HookDefinition(
            id=hook_id,
            type=pb.HOOK_TYPE_BEFORE,
            level=pb.HOOK_LEVEL_GLOBAL,
            timeout=timeout,
            retries=retries,
        )
        manifest = pb.HookManifest(handler_id=handler_id, hooks=[hook], version="1")
        request = pb.ManifestStoreServiceStoreHookManifestRequest(hook_manifest=manifest)
        if isinstance(
            self.call(self.stub.StoreHookManifest, request), pb.ManifestStoreServiceStoreHookManifestResponse
        ):
            self.hooks[handler_id] = manifest

    @rule(handler_id=HANDLERS, deployed=timestamps(), hook_created=timestamps())
    def store_version_graph(self, handler_id: str, deployed: Any, hook_created: Any) -> None:
        node = pb.VersionNode(version="1", manifest_hash="h", deploy_time=deployed, active=True)
        graph = pb.VersionGraph(
            handler_id=handler_id, versions=[node], current_version="1", latest_version="1"
        )
        request = pb.ManifestStoreServiceStoreVersionGraphRequest(version_graph=graph)
        if isinstance(
            self.call(self.stub.StoreVersionGraph, request), pb.ManifestStoreServiceStoreVersionGraphResponse
        ):
            got = self.call(
                self.stub.GetVersionGraph,
                pb.ManifestStoreServiceGetVersionGraphRequest(handler_id=handler_id),
            )
            assert isinstance(got, pb.ManifestStoreServiceGetVersionGraphResponse)
            assert got.version_graph == graph
        manifest = pb.HookManifest(handler_id=handler_id, create_time=hook_created, version="2")
        hook_request = pb.ManifestStoreServiceStoreHookManifestRequest(hook_manifest=manifest)
        if isinstance(
            self.call(self.stub.StoreHookManifest, hook_request),
            pb.ManifestStoreServiceStoreHookManifestResponse,
        ):
            self.hooks[handler_id] = manifest

    @invariant()
    def everything_reads_back_as_stored(self) -> None:
        for (handler_id, version), stored in self.manifests.items():
            request = pb.ManifestStoreServiceGetManifestRequest(handler_id=handler_id, version=version)
            got = self.call(self.stub.GetManifest, request)
            assert isinstance(got, pb.ManifestStoreServiceGetManifestResponse)
            assert got.manifest == stored
        for handler_id, hook_manifest in self.hooks.items():
            hook_request = pb.ManifestStoreServiceGetHookManifestRequest(handler_id=handler_id)
            got_hooks = self.call(self.stub.GetHookManifest, hook_request)
            assert isinstance(got_hooks, pb.ManifestStoreServiceGetHookManifestResponse)
            assert got_hooks.hook_manifest == hook_manifest

    @rule(handler_id=HANDLERS, page_size=st.integers(1, 3), data=st.data())
    def version_pages(self, handler_id: str, page_size: int, data: st.DataObject) -> None:
        request = pb.ManifestStoreServiceListManifestVersionsRequest(
            handler_id=handler_id, page_size=page_size
        )
        seen: list[str] = []
        for _ in range(100):
            answer = self.call(self.stub.ListManifestVersions, request)
            assert isinstance(answer, pb.ManifestStoreServiceListManifestVersionsResponse)
            for manifest in answer.manifests:
                assert manifest == self.manifests[(handler_id, manifest.version)]
                seen.append(manifest.version)
            if not answer.next_page_token:
                break
            token = answer.next_page_token
            self.call.refused_token(
                self.stub.ListManifestVersions, request, mutated_token(token, data), token
            )
            request.page_token = token
        assert sorted(seen) == sorted(version for handler, version in self.manifests if handler == handler_id)
        hooks = pb.ManifestStoreServiceListHookManifestsRequest(page_size=1)
        listed = self.call(self.stub.ListHookManifests, hooks)
        assert isinstance(listed, pb.ManifestStoreServiceListHookManifestsResponse)
        if listed.next_page_token:
            token = listed.next_page_token
            self.call.refused_token(self.stub.ListHookManifests, hooks, mutated_token(token, data), token)
        self.call(self.stub.GetStats, pb.ManifestStoreServiceGetStatsRequest())


@pytest.mark.parametrize("backend", DATABASE_BACKENDS)
def test_manifest_fuzz(backend: str, daemons: Daemons) -> None:
    ManifestMachine.target = daemons.get(backend).target
    run_state_machine_as_test(ManifestMachine, settings=FUZZ_SETTINGS)

"""The manifest store (DESIGN 4.6), through the real gRPC API and client, on every backend that serves it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp

from stord.client import Client, InvalidArgument, Unimplemented
from stord.v1 import manifests_pb2 as pb
from tests.conftest import SharedDaemon


def at(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def manifest(handler_id: str, version: str, create_time: Timestamp | None = None) -> pb.HandlerManifest:
    return pb.HandlerManifest(handler_id=handler_id, version=version, create_time=create_time)


def versions(client: Client, handler_id: str, page_size: int = 0) -> list[str]:
    return [item.version for item in client.manifests.list_manifest_versions(handler_id, page_size=page_size)]


def latest(client: Client, handler_id: str) -> str | None:
    found = client.manifests.get_manifest(handler_id)
    return None if found is None else found.version


# Handler manifests -----------------------------------------------------------------------------------------


def test_versions_page_at_both_ends_of_time(database_client: Client) -> None:
    """Nanoseconds since the epoch of year 0001 or 9999 need 68 bits; paging through them still works."""
    first, last = at(-62_135_596_800), at(253_402_300_799, 999_999_999)
    for version, created in (("old", first), ("new", last), ("mid", at(0))):
        database_client.manifests.store_manifest(manifest("edges", version, created))
    assert versions(database_client, "edges", page_size=1) == ["old", "mid", "new"]


def test_a_manifest_round_trips_with_every_field(database_client: Client) -> None:
    stored = pb.HandlerManifest(
        handler_id="user.create",
        version="1.2.0",
        path="/users/:id",
        methods=["POST", "PUT"],
        gtypes=pb.HandlerGTypes(request="CreateUser", response="User", params="UserParams"),
        hooks=pb.HandlerHooks(before=["auth", "audit"], after=["metrics"], on_error=["report"]),
        timescape_version="tsv:1732186200-users-042",
        policies=pb.HandlerPolicies(
            roles=["admin"], rate_limit=pb.HandlerRateLimit(limit=100, window=Duration(seconds=60))
        ),
        dependencies=pb.HandlerDependencies(modules=["db"], plugins=["tracing"]),
        hash="sha256:abc",
        create_time=at(1_732_186_200, 123_456_789),
    )
    create_time = database_client.manifests.store_manifest(stored)
    assert create_time == stored.create_time
    assert database_client.manifests.get_manifest("user.create", "1.2.0") == stored
    assert database_client.manifests.get_manifest("user.create") == stored
    assert database_client.manifests.get_manifest("user.create", "9.9.9") is None
    assert database_client.manifests.get_manifest("user.delete") is None


def test_latest_is_the_greatest_create_time_then_the_greatest_version(database_client: Client) -> None:
    manifests = database_client.manifests
    manifests.store_manifest(manifest("h", "1.0.0", at(100)))
    manifests.store_manifest(manifest("h", "3.0.0", at(200)))
    manifests.store_manifest(manifest("h", "2.0.0", at(300)))
    assert latest(database_client, "h") == "2.0.0"
    # Equal create_times: the greatest version in code point order wins, whatever order they came in.
    manifests.store_manifest(manifest("h", "2.0.0-b", at(300)))
    manifests.store_manifest(manifest("h", "2.0.0-a", at(300)))
    assert latest(database_client, "h") == "2.0.0-b"
    # Nanoseconds count: a later instant within the same second wins.
    manifests.store_manifest(manifest("h", "0.1.0", at(300, 1)))
    assert latest(database_client, "h") == "0.1.0"
    assert versions(database_client, "h") == ["1.0.0", "3.0.0", "2.0.0", "2.0.0-a", "2.0.0-b", "0.1.0"]
    assert versions(database_client, "h", page_size=4) == versions(database_client, "h")
    assert versions(database_client, "other") == []


def test_storing_a_version_again_replaces_it_and_may_change_the_latest(database_client: Client) -> None:
    manifests = database_client.manifests
    manifests.store_manifest(manifest("h", "1", at(100)))
    manifests.store_manifest(manifest("h", "2", at(200)))
    replacement = pb.HandlerManifest(handler_id="h", version="1", path="/v1", create_time=at(300))
    manifests.store_manifest(replacement)
    assert manifests.get_manifest("h") == replacement
    assert versions(database_client, "h") == ["2", "1"]
    assert manifests.get_stats().manifest_count == 2


def test_an_unset_create_time_is_the_daemon_clock(
    database_served: SharedDaemon, database_client: Client
) -> None:
    create_time = database_client.manifests.store_manifest(manifest("h", "1"))
    assert create_time.ToNanoseconds() == round(database_served.clock() * 1e9)
    stored = database_client.manifests.get_manifest("h", "1")
    assert stored is not None
    assert stored.create_time == create_time


def test_create_time_covers_the_whole_timestamp_range(database_client: Client) -> None:
    manifests = database_client.manifests
    manifests.store_manifest(manifest("h", "first", at(-62_135_596_800)))
    manifests.store_manifest(manifest("h", "last", at(253_402_300_799, 999_999_999)))
    assert versions(database_client, "h") == ["first", "last"]
    last = manifests.get_manifest("h")
    assert last is not None
    assert last.create_time == at(253_402_300_799, 999_999_999)


# Hook manifests, GTypes, transformers, version graphs, Timescape metadata ----------------------------------


def test_hook_manifests_by_handler_listed_in_order_and_paged(database_client: Client) -> None:
    manifests = database_client.manifests
    hook = pb.HookDefinition(
        id="auth",
        type=pb.HOOK_TYPE_BEFORE,
        level=pb.HOOK_LEVEL_HANDLER,
        is_async=True,
        timeout=Duration(seconds=2),
        retries=0,
        source_location=pb.HookSourceLocation(file="src/users.ts", line=12, column=3),
    )
    for handler_id in ("orders.list", "users.create", "auth.login"):
        manifests.store_hook_manifest(pb.HookManifest(handler_id=handler_id, hooks=[hook], version="1"))
    stored = manifests.get_hook_manifest("users.create")
    assert stored == pb.HookManifest(handler_id="users.create", hooks=[hook], version="1")
    assert stored is not None
    assert stored.hooks[0].HasField("retries")  # zero retries is not "unset"
    assert manifests.get_hook_manifest("missing") is None
    listed = [item.handler_id for item in manifests.list_hook_manifests(page_size=2)]
    assert listed == ["auth.login", "orders.list", "users.create"]
    manifests.store_hook_manifest(pb.HookManifest(handler_id="users.create"))
    assert manifests.get_hook_manifest("users.create") == pb.HookManifest(handler_id="users.create")
    assert manifests.get_stats().hook_manifest_count == 3


def deep_gtype(depth: int) -> pb.GType:
    """A GType `depth` levels deep cycling through every kind, with validators at each level."""
    inner = pb.GType(primitive=pb.G_TYPE_PRIMITIVE_STRING)
    inner.validators.add(type=pb.G_TYPE_VALIDATOR_TYPE_PATTERN, value=Value(string_value="^[a-z]+$"))
    for level in range(depth - 1):
        outer = pb.GType(description=f"level {level}")
        shape = level % 4
        if shape == 0:
            outer.object.properties.add(name="child", type=inner, optional=True, description="nested")
            outer.object.properties.add(name="flag", type=pb.GType(primitive=pb.G_TYPE_PRIMITIVE_BOOLEAN))
            outer.object.required.append("flag")
        elif shape == 1:
            outer.array.items.CopyFrom(inner)
        elif shape == 2:
            outer.union.types.extend([inner, pb.GType(primitive=pb.G_TYPE_PRIMITIVE_NULL)])
        else:
            outer.intersection.types.extend([inner, pb.GType(ref="Audited")])
        enum_values = Value()
        enum_values.list_value.values.add(number_value=1)
        enum_values.list_value.values.add(string_value="two")
        outer.validators.add(type=pb.G_TYPE_VALIDATOR_TYPE_ENUM, value=enum_values, message="not allowed")
        inner = outer
    inner.ref = "Deep"
    return inner


def test_a_deeply_nested_gtype_round_trips(database_client: Client) -> None:
    gtype = deep_gtype(32)
    database_client.manifests.store_gtype(gtype)
    assert database_client.manifests.get_gtype("Deep") == gtype
    assert database_client.manifests.get_gtype("Shallow") is None


def test_a_nested_gtype_may_refer_to_a_stored_one_which_makes_recursive_types(
    database_client: Client,
) -> None:
    tree = pb.GType(ref="Tree")
    tree.object.properties.add(
        name="children", type=pb.GType(array=pb.GTypeArray(items=pb.GType(ref="Tree")))
    )
    database_client.manifests.store_gtype(tree)
    assert database_client.manifests.get_gtype("Tree") == tree


def test_transformers_by_id_and_by_exact_version_pair(database_client: Client) -> None:
    manifests = database_client.manifests

    def transformer(
        transformer_id: str, handler_id: str, from_version: str, to_version: str
    ) -> pb.Transformer:
        details = Struct()
        details.update({"newName": "emailAddress"})
        return pb.Transformer(
            id=transformer_id,
            handler_id=handler_id,
            from_version=from_version,
            to_version=to_version,
            direction=pb.TRANSFORMER_DIRECTION_FORWARD,
            transformations=[
                pb.Transformation(path="user.email", type=pb.TRANSFORMATION_TYPE_RENAME, details=details)
            ],
            hash="t",
            create_time=at(1000),
        )

    stored = [
        transformer("u:b", "users", "1", "2"),
        transformer("u:a", "users", "1", "2"),
        transformer("u:c", "users", "1", "3"),
        transformer("u:d", "users", "2", "1"),
        transformer("o:a", "orders", "1", "2"),
    ]
    for item in stored:
        manifests.store_transformer(item)
    assert manifests.get_transformer("u:b") == stored[0]
    assert manifests.get_transformer("missing") is None
    assert manifests.get_transformers_for_versions("users", "1", "2") == [stored[1], stored[0]]
    assert manifests.get_transformers_for_versions("users", "1", "9") == []
    moved = transformer("u:a", "users", "1", "3")
    manifests.store_transformer(moved)
    assert manifests.get_transformers_for_versions("users", "1", "2") == [stored[0]]
    assert manifests.get_transformers_for_versions("users", "1", "3") == [moved, stored[2]]
    assert manifests.get_stats().transformer_count == 5


def test_version_graphs_and_timescape_metadata(database_client: Client) -> None:
    manifests = database_client.manifests
    graph = pb.VersionGraph(
        handler_id="users",
        versions=[
            pb.VersionNode(version="1", manifest_hash="h1", deploy_time=at(10), active=False),
            pb.VersionNode(
                version="2",
                manifest_hash="h2",
                deploy_time=at(20),
                active=True,
                parent="1",
                breaking=True,
                transformers=[pb.VersionEdge(to_version="1", transformer_id="u:2-1")],
            ),
        ],
        current_version="2",
        latest_version="2",
    )
    manifests.store_version_graph(graph)
    assert manifests.get_version_graph("users") == graph
    assert manifests.get_version_graph("orders") is None
    metadata = pb.TimescapeMetadata(
        handler_id="users",
        version="2",
        fingerprint="fp",
        compatibility=pb.TimescapeCompatibility(compatible=["1.9"], incompatible=["1"], transformable=["1"]),
        deployment=pb.TimescapeDeployment(
            strategy=pb.DEPLOYMENT_STRATEGY_CANARY, rollout_percentage=0, status=pb.DEPLOYMENT_STATUS_ACTIVE
        ),
        metrics=pb.TimescapeMetrics(
            request_count=15000, error_rate=0.002, avg_latency_ms=45.5, update_time=at(30)
        ),
    )
    manifests.store_timescape_metadata(metadata)
    stored = manifests.get_timescape_metadata("users", "2")
    assert stored == metadata
    assert stored is not None
    assert stored.deployment.HasField("rollout_percentage")
    assert manifests.get_timescape_metadata("users", "1") is None
    stats = manifests.get_stats()
    assert (stats.version_graph_count, stats.timescape_metadata_count) == (1, 1)


def test_clear_empties_the_namespace_only_and_stats_count_every_version(
    database_served: SharedDaemon,
) -> None:
    with database_served.client() as mine, database_served.client() as theirs:
        for client in (mine, theirs):
            for version in ("1", "2", "3"):
                client.manifests.store_manifest(manifest("h", version))
            client.manifests.store_hook_manifest(pb.HookManifest(handler_id="h"))
            client.manifests.store_gtype(pb.GType(ref="T", primitive=pb.G_TYPE_PRIMITIVE_NUMBER))
        stats = mine.manifests.get_stats()
        assert (stats.manifest_count, stats.hook_manifest_count, stats.gtype_count) == (3, 1, 1)
        mine.manifests.clear()
        assert mine.manifests.get_stats() == pb.ManifestStoreServiceGetStatsResponse()
        assert mine.manifests.get_manifest("h") is None
        assert versions(mine, "h") == []
        assert mine.manifests.get_gtype("T") is None
        assert theirs.manifests.get_stats().manifest_count == 3
        assert latest(theirs, "h") is not None


# Bad input -------------------------------------------------------------------------------------------------

Store = Callable[[Client], object]


def _storing(gtype: pb.GType) -> Store:
    return lambda client: client.manifests.store_gtype(gtype)


def _nested(depth: int) -> pb.GType:
    gtype = pb.GType(primitive=pb.G_TYPE_PRIMITIVE_STRING)
    for _ in range(depth - 1):
        gtype = pb.GType(array=pb.GTypeArray(items=gtype))
    gtype.ref = "TooDeep"
    return gtype


def _property(name: str) -> pb.GTypeProperty:
    return pb.GTypeProperty(name=name, type=pb.GType(primitive=pb.G_TYPE_PRIMITIVE_STRING))


def _object(*properties: pb.GTypeProperty, required: tuple[str, ...] = ()) -> pb.GType:
    return pb.GType(ref="T", object=pb.GTypeObject(properties=properties, required=required))


BAD_REQUESTS: list[tuple[str, Store]] = [
    ("manifest.handler_id", lambda client: client.manifests.store_manifest(manifest("", "1"))),
    ("manifest.version", lambda client: client.manifests.store_manifest(manifest("h", ""))),
    ("manifest.create_time", lambda client: client.manifests.store_manifest(manifest("h", "1", at(10**12)))),
    (
        "manifest.policies.rate_limit.limit",
        lambda client: client.manifests.store_manifest(
            pb.HandlerManifest(
                handler_id="h", version="1", policies=pb.HandlerPolicies(rate_limit=pb.HandlerRateLimit())
            )
        ),
    ),
    (
        "manifest.path",
        lambda client: client.manifests.store_manifest(
            pb.HandlerManifest(handler_id="h", version="1", path="\x00")
        ),
    ),
    ("version", lambda client: client.manifests.get_manifest("h", "")),
    ("handler_id", lambda client: list(client.manifests.list_manifest_versions(""))),
    (
        r"hook_manifest\.hooks\[0\]\.type",
        lambda client: client.manifests.store_hook_manifest(
            pb.HookManifest(handler_id="h", hooks=[pb.HookDefinition(id="x", level=pb.HOOK_LEVEL_GLOBAL)])
        ),
    ),
    ("gtype.kind", _storing(pb.GType(ref="T"))),
    ("gtype.primitive", _storing(pb.GType(ref="T", primitive=pb.G_TYPE_PRIMITIVE_UNSPECIFIED))),
    ("gtype.array.items", _storing(pb.GType(ref="T", array=pb.GTypeArray()))),
    ("gtype.union.types", _storing(pb.GType(ref="T", union=pb.GTypeList()))),
    (r"gtype\.object\.properties\[1\]\.name", _storing(_object(_property("a"), _property("a")))),
    (r"gtype\.object\.required\[0\]", _storing(_object(_property("a"), required=("b",)))),
    (r"gtype\.object\.properties\[0\]\.type", _storing(_object(pb.GTypeProperty(name="anonymous")))),
    (
        r"gtype\.validators\[0\]\.type",
        _storing(pb.GType(ref="T", primitive=pb.G_TYPE_PRIMITIVE_STRING, validators=[pb.GTypeValidator()])),
    ),
    ("gtype", _storing(_nested(33))),
    (
        r"transformer\.transformations\[0\]\.details",
        lambda client: client.manifests.store_transformer(_transformer_with_nan_details()),
    ),
    (
        "timescape_metadata.deployment",
        lambda client: client.manifests.store_timescape_metadata(
            pb.TimescapeMetadata(handler_id="h", version="1")
        ),
    ),
    (
        "timescape_metadata.deployment.rollout_percentage",
        lambda client: client.manifests.store_timescape_metadata(_timescape(rollout_percentage=101)),
    ),
    (
        "timescape_metadata.metrics.error_rate",
        lambda client: client.manifests.store_timescape_metadata(
            _timescape(metrics=pb.TimescapeMetrics(error_rate=float("nan")))
        ),
    ),
    (
        r"version_graph\.versions\[0\]\.version",
        lambda client: client.manifests.store_version_graph(
            pb.VersionGraph(handler_id="h", versions=[pb.VersionNode()])
        ),
    ),
]


def _transformer_with_nan_details() -> pb.Transformer:
    details = Struct()
    details.update({"factor": float("nan")})
    change = pb.Transformation(path="p", type=pb.TRANSFORMATION_TYPE_TRANSFORM, details=details)
    return pb.Transformer(
        id="t",
        handler_id="h",
        from_version="1",
        to_version="2",
        direction=pb.TRANSFORMER_DIRECTION_BACKWARD,
        transformations=[change],
    )


def _timescape(
    rollout_percentage: float | None = None, metrics: pb.TimescapeMetrics | None = None
) -> pb.TimescapeMetadata:
    deployment = pb.TimescapeDeployment(
        strategy=pb.DEPLOYMENT_STRATEGY_ROLLING,
        status=pb.DEPLOYMENT_STATUS_PENDING,
        rollout_percentage=rollout_percentage,
    )
    return pb.TimescapeMetadata(handler_id="h", version="1", deployment=deployment, metrics=metrics)


@pytest.mark.parametrize(("field", "store"), BAD_REQUESTS, ids=[field for field, _ in BAD_REQUESTS])
def test_bad_input_is_rejected_by_field_and_stores_nothing(
    database_client: Client, field: str, store: Store
) -> None:
    with pytest.raises(InvalidArgument, match=field):
        store(database_client)
    assert database_client.manifests.get_stats() == pb.ManifestStoreServiceGetStatsResponse()


# Backends that do not serve the contract -------------------------------------------------------------------


def test_redis_answers_unimplemented(redis_served: SharedDaemon) -> None:
    with redis_served.client() as client, pytest.raises(Unimplemented, match="ManifestStoreService"):
        client.manifests.get_stats()

"""What ManifestStoreService checks before storing a record (DESIGN 4.6); each failure names its field.

Beyond these, `message_json.to_document` rejects what JSON cannot hold (NUL characters, non-finite numbers,
out-of-range timestamps and durations) in every field at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from stord.server.ports import InvalidArgument
from stord.server.rpc import validate as check
from stord.v1 import manifests_pb2 as pb

__all__ = [
    "MAX_GTYPE_DEPTH",
    "check_gtype",
    "check_handler_manifest",
    "check_hook_manifest",
    "check_timescape_metadata",
    "check_transformer",
    "check_version_graph",
]

MAX_GTYPE_DEPTH = 32
"""GTypes nest at most this deep; protobuf itself refuses messages nested about 100 levels deep, which a
GType object reaches at 33 (each level of properties is three messages)."""


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    return value


def _positive_duration(seconds: int, nanos: int, field: str) -> None:
    if seconds < 0 or nanos < 0 or (seconds == 0 and nanos == 0):
        raise InvalidArgument(field, "must be positive")


def check_handler_manifest(manifest: pb.HandlerManifest, field: str) -> None:
    """Check the keys and the rate limit of a handler manifest."""
    check.key(manifest.handler_id, f"{field}.handler_id")
    check.key(manifest.version, f"{field}.version")
    if manifest.policies.HasField("rate_limit"):
        rate_limit = manifest.policies.rate_limit
        if rate_limit.limit <= 0:
            raise InvalidArgument(f"{field}.policies.rate_limit.limit", "must be positive")
        window = rate_limit.window
        _positive_duration(window.seconds, window.nanos, f"{field}.policies.rate_limit.window")


def check_hook_manifest(manifest: pb.HookManifest, field: str) -> None:
    """Check the key of a hook manifest and every hook definition."""
    check.key(manifest.handler_id, f"{field}.handler_id")
    for index, hook in enumerate(manifest.hooks):
        where = f"{field}.hooks[{index}]"
        _required(hook.id, f"{where}.id")
        check.enum_value(hook.type, pb.HookType.DESCRIPTOR, f"{where}.type")
        check.enum_value(hook.level, pb.HookLevel.DESCRIPTOR, f"{where}.level")
        if hook.HasField("timeout") and (hook.timeout.seconds < 0 or hook.timeout.nanos < 0):
            raise InvalidArgument(f"{where}.timeout", "must not be negative")
        if hook.HasField("retries") and hook.retries < 0:
            raise InvalidArgument(f"{where}.retries", "must not be negative")
        location = hook.source_location
        if location.line < 0 or location.column < 0:
            raise InvalidArgument(f"{where}.source_location", "line and column must not be negative")


def check_gtype(gtype: pb.GType, field: str) -> None:
    """Check a GType given to StoreGType: a ref, a kind, and every nested type."""
    check.key(gtype.ref, f"{field}.ref")
    if gtype.WhichOneof("kind") is None:
        raise InvalidArgument(f"{field}.kind", "must be set: object, array, primitive, union or intersection")
    _check_type(gtype, field, depth=1)


def _check_type(gtype: pb.GType, field: str, depth: int) -> None:
    if depth > MAX_GTYPE_DEPTH:
        raise InvalidArgument(field, f"GTypes nest at most {MAX_GTYPE_DEPTH} levels deep")
    for index, validator in enumerate(gtype.validators):
        check.enum_value(
            validator.type, pb.GTypeValidatorType.DESCRIPTOR, f"{field}.validators[{index}].type"
        )
    kind = gtype.WhichOneof("kind")
    if kind is None and not gtype.ref:
        raise InvalidArgument(field, "a nested GType needs a kind, or a ref to a stored GType")
    if kind == "object":
        _check_object(gtype.object, f"{field}.object", depth)
    elif kind == "array":
        if not gtype.array.HasField("items"):
            raise InvalidArgument(f"{field}.array.items", "is required")
        _check_type(gtype.array.items, f"{field}.array.items", depth + 1)
    elif kind == "primitive":
        check.enum_value(gtype.primitive, pb.GTypePrimitive.DESCRIPTOR, f"{field}.primitive")
    elif kind in ("union", "intersection"):
        _check_members(getattr(gtype, kind).types, f"{field}.{kind}.types", depth)


def _check_object(shape: pb.GTypeObject, field: str, depth: int) -> None:
    names: set[str] = set()
    for index, prop in enumerate(shape.properties):
        where = f"{field}.properties[{index}]"
        if prop.name in names:
            raise InvalidArgument(f"{where}.name", f"repeats the property {prop.name!r}")
        names.add(_required(prop.name, f"{where}.name"))
        if not prop.HasField("type"):
            raise InvalidArgument(f"{where}.type", "is required")
        _check_type(prop.type, f"{where}.type", depth + 1)
    for index, name in enumerate(shape.required):
        if name not in names:
            raise InvalidArgument(f"{field}.required[{index}]", f"names no property: {name!r}")


def _check_members(members: Sequence[pb.GType], field: str, depth: int) -> None:
    if not members:
        raise InvalidArgument(field, "must hold at least one type")
    for index, member in enumerate(members):
        _check_type(member, f"{field}[{index}]", depth + 1)


def check_transformer(transformer: pb.Transformer, field: str) -> None:
    """Check the keys, the direction and the transformations of a transformer."""
    check.key(transformer.id, f"{field}.id")
    check.key(transformer.handler_id, f"{field}.handler_id")
    check.key(transformer.from_version, f"{field}.from_version")
    check.key(transformer.to_version, f"{field}.to_version")
    check.enum_value(transformer.direction, pb.TransformerDirection.DESCRIPTOR, f"{field}.direction")
    for index, change in enumerate(transformer.transformations):
        where = f"{field}.transformations[{index}]"
        _required(change.path, f"{where}.path")
        check.enum_value(change.type, pb.TransformationType.DESCRIPTOR, f"{where}.type")


def check_version_graph(graph: pb.VersionGraph, field: str) -> None:
    """Check the key of a version graph and that every node and edge names its versions."""
    check.key(graph.handler_id, f"{field}.handler_id")
    for index, node in enumerate(graph.versions):
        where = f"{field}.versions[{index}]"
        _required(node.version, f"{where}.version")
        for edge_index, edge in enumerate(node.transformers):
            _required(edge.to_version, f"{where}.transformers[{edge_index}].to_version")
            _required(edge.transformer_id, f"{where}.transformers[{edge_index}].transformer_id")


def check_timescape_metadata(metadata: pb.TimescapeMetadata, field: str) -> None:
    """Check the keys, the deployment and the figures of Timescape metadata."""
    check.key(metadata.handler_id, f"{field}.handler_id")
    check.key(metadata.version, f"{field}.version")
    if not metadata.HasField("deployment"):
        raise InvalidArgument(f"{field}.deployment", "is required")
    deployment = metadata.deployment
    check.enum_value(deployment.strategy, pb.DeploymentStrategy.DESCRIPTOR, f"{field}.deployment.strategy")
    check.enum_value(deployment.status, pb.DeploymentStatus.DESCRIPTOR, f"{field}.deployment.status")
    if deployment.HasField("rollout_percentage") and not 0 <= deployment.rollout_percentage <= 100:
        raise InvalidArgument(f"{field}.deployment.rollout_percentage", "must lie within [0, 100]")
    if metadata.HasField("metrics"):
        metrics = metadata.metrics
        if metrics.request_count < 0:
            raise InvalidArgument(f"{field}.metrics.request_count", "must not be negative")
        if not 0 <= metrics.error_rate <= 1:
            raise InvalidArgument(f"{field}.metrics.error_rate", "must lie within [0, 1]")
        if not (math.isfinite(metrics.avg_latency_ms) and metrics.avg_latency_ms >= 0):
            raise InvalidArgument(f"{field}.metrics.avg_latency_ms", "must be a finite number, not negative")

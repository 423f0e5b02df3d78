"""API keys: who may call, in which namespace, with which role; and which RPCs each role may call.

The keys file lists keys by their SHA-256 hash only, so a leaked file grants nothing. A presented key is
hashed and looked up by hash; the final comparison uses `hmac.compare_digest` so its timing does not reveal
how much of a stored hash matched. Neither keys nor hashes are ever logged.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ACCESS_BY_METHOD",
    "Access",
    "ApiKey",
    "KeyRing",
    "KeysFileError",
    "Role",
    "hash_key",
    "load_keys_file",
    "new_key",
    "permits",
    "write_keys_file",
]

BEARER_PREFIX = "bearer "
KEY_PREFIX = "stord_"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class Role(enum.StrEnum):
    """What a key may do: every RPC, reads and writes in its namespace, or only reads."""

    ADMIN = "admin"
    READ_WRITE = "read-write"
    READ_ONLY = "read-only"


class Access(enum.Enum):
    """What an RPC does, which decides the roles that may call it."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


_ALLOWED: dict[Role, frozenset[Access]] = {
    Role.ADMIN: frozenset(Access),
    Role.READ_WRITE: frozenset({Access.READ, Access.WRITE}),
    Role.READ_ONLY: frozenset({Access.READ}),
}


def _table(service: str, reads: str, writes: str, admin: str = "") -> dict[str, Access]:
    table = {f"/stord.v1.{service}/{name}": Access.READ for name in reads.split()}
    table.update({f"/stord.v1.{service}/{name}": Access.WRITE for name in writes.split()})
    table.update({f"/stord.v1.{service}/{name}": Access.ADMIN for name in admin.split()})
    return table


# Every RPC of every service, by hand: a test fails when a service gains an RPC that is not listed here, and
# an unlisted method is refused (treated as admin) rather than guessed from its name.
ACCESS_BY_METHOD: dict[str, Access] = {
    **_table("CacheService", "Get MGet Exists Keys", "Set Delete MSet Clear"),
    **_table("DatabaseService", "Get MGet Exists Keys GetRange GetLength", "Set Delete MSet Clear Append"),
    **_table(
        "DocumentService",
        "GetDocument ListDocuments CountDocuments",
        "CreateDocument UpdateDocument DeleteDocument Transact CreateIndex",
    ),
    # Dequeue takes a lease and Acknowledge/Fail/ExtendLease change a job: a worker needs read-write.
    **_table(
        "JobQueueService", "GetJob ListJobs GetQueueStats", "Enqueue Dequeue Acknowledge Fail ExtendLease"
    ),
    **_table(
        "EventStoreService",
        "GetEvent QueryEvents CountEvents GetSessionTimeline VerifySessionChain TailEvents GetSession"
        " QuerySessions GetAgent ListAgents GetAnalytics GetAlertRule ListAlertRules ListAlertHistory"
        " GetStats",
        "InsertEvents IngestEvents UpsertSession UpsertAgent CreateAlertRule UpdateAlertRule DeleteAlertRule"
        " RecordAlert",
        # Retention deletes history wholesale: an operator's decision, not an application's.
        admin="ApplyRetention",
    ),
    **_table("AgentStoreService", "GetAgent SearchAgents", "SetAgent DeleteAgent"),
    **_table(
        "ManifestStoreService",
        "GetManifest ListManifestVersions GetHookManifest ListHookManifests GetGType GetTransformer"
        " GetTransformersForVersions GetVersionGraph GetTimescapeMetadata GetStats",
        "StoreManifest StoreHookManifest StoreGType StoreTransformer StoreVersionGraph StoreTimescapeMetadata"
        " Clear",
    ),
    **_table("AdminService", "", "", admin="GetInfo"),
    **_table("AlertService", "ListAlertDeliveries", ""),
    # OTLP ingest stores events.
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export": Access.WRITE,
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export": Access.WRITE,
}


def permits(role: Role, method: str) -> bool:
    """Return whether `role` may call the full gRPC `method` name; unlisted methods need admin."""
    return ACCESS_BY_METHOD.get(method, Access.ADMIN) in _ALLOWED[role]


class KeysFileError(Exception):
    """The keys file is unreadable or malformed; the message says where, never a key or hash."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One entry of the keys file."""

    id: str
    """A short public name for the key, shown by `stord keys list` and used to revoke it."""
    sha256: str
    namespace: str
    principal: str
    role: Role

    def to_yaml(self) -> dict[str, str]:
        return {
            "id": self.id,
            "sha256": self.sha256,
            "namespace": self.namespace,
            "principal": self.principal,
            "role": self.role.value,
        }


def hash_key(key: str) -> str:
    """Return the hex SHA-256 of a key, as the keys file stores it."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """Return a fresh random key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _parse_entry(entry: Any, index: int, path: Path) -> ApiKey:
    from stord.server.ports import InvalidArgument
    from stord.server.rpc.calls import resolve_namespace, resolve_principal

    where = f"{path}: keys[{index}]"
    if not isinstance(entry, dict):
        raise KeysFileError(f"{where} must be a mapping")
    missing = {"id", "sha256", "namespace", "principal", "role"} - entry.keys()
    if missing:
        raise KeysFileError(f"{where} lacks {', '.join(sorted(missing))}")
    fields = {name: entry[name] for name in ("id", "sha256", "namespace", "principal", "role")}
    if not all(isinstance(value, str) for value in fields.values()):
        raise KeysFileError(f"{where}: every field must be a string")
    if _SHA256_HEX.fullmatch(fields["sha256"]) is None:
        raise KeysFileError(f"{where}: sha256 must be 64 lowercase hex digits")
    try:
        role = Role(fields["role"])
        resolve_namespace(fields["namespace"])
        resolve_principal(fields["principal"])
    except ValueError:
        raise KeysFileError(f"{where}: role must be one of {', '.join(r.value for r in Role)}") from None
    except InvalidArgument as error:
        raise KeysFileError(f"{where}: {error}") from None
    return ApiKey(fields["id"], fields["sha256"], fields["namespace"], fields["principal"], role)


def load_keys_file(path: Path) -> list[ApiKey]:
    """Read and validate a keys file; raise KeysFileError when it is unusable. A missing file is empty."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except OSError as error:
        raise KeysFileError(f"cannot read keys file {path}: {error.strerror}") from None
    except yaml.YAMLError:
        raise KeysFileError(f"keys file {path} is not valid YAML") from None
    if loaded is None:
        return []
    if not isinstance(loaded, dict) or not isinstance(loaded.get("keys", []), list):
        raise KeysFileError(f"keys file {path} must be a mapping with a `keys` list")
    keys = [_parse_entry(entry, index, path) for index, entry in enumerate(loaded.get("keys") or [])]
    ids = [key.id for key in keys]
    if len(set(ids)) != len(ids):
        raise KeysFileError(f"keys file {path} repeats a key id")
    return keys


def write_keys_file(path: Path, keys: list[ApiKey]) -> None:
    """Replace the keys file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    text = yaml.safe_dump({"keys": [key.to_yaml() for key in keys]}, sort_keys=False)
    staging.write_text(text, encoding="utf-8")
    staging.chmod(0o600)
    staging.replace(path)


class KeyRing:
    """The keys the daemon accepts, replaced whole on reload."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_hash: dict[str, ApiKey] = {}
        self._listeners: list[Callable[[], None]] = []
        self.reload()

    def __len__(self) -> int:
        return len(self._by_hash)

    def reload(self) -> None:
        """Read the file again; on KeysFileError the keys in force stay unchanged.

        A missing file is an error here, not an empty list: it is more likely a deployment mistake than a
        wish to lock every caller out (revoke keys with `stord keys revoke` instead).
        """
        if not self.path.is_file():
            raise KeysFileError(f"keys file {self.path} does not exist")
        keys = load_keys_file(self.path)
        self._by_hash = {key.sha256: key for key in keys}
        for listener in self._listeners:
            listener()

    def on_reload(self, listener: Callable[[], None]) -> None:
        """Call `listener` after each successful reload, on the thread that reloads."""
        self._listeners.append(listener)

    def current(self, key: ApiKey) -> ApiKey | None:
        """Return what the keys in force say about `key` now, None once it is revoked."""
        return self._by_hash.get(key.sha256)

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """Return the key an `authorization: Bearer <key>` value presents, None when unknown or absent."""
        if authorization is None or not authorization.lower().startswith(BEARER_PREFIX):
            return None
        digest = hash_key(authorization[len(BEARER_PREFIX) :].strip())
        found = self._by_hash.get(digest)
        if found is None or not hmac.compare_digest(found.sha256, digest):
            return None
        return found

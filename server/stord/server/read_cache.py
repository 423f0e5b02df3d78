"""Read-through caching of GetAgent and GetManifest in the cache role's key-value store (DESIGN 4.5, 4.6).

The guarantee: once a write has returned OK, no read on any daemon sharing the database and the cache
answers with what the write replaced. How:

- Every cached record belongs to scopes (an agent; a handler's manifests; a namespace's manifests), and each
  scope has a generation: a random 16-byte token under a cache key of its own.
- A read fetches its scopes' tokens and its entry in one MGET. An entry carries the tokens that were current
  when it was filled, and is served only while they are still the current ones.
- On a miss the reader loads from the database and fills the entry with the tokens it fetched *before*
  loading. A write commits to the database, then gives each of its scopes a fresh token, and only then
  returns. A read that starts after the write returned therefore sees the new token, while any entry filled
  from a database read that could predate the write carries an older token and is never served again. A
  fresh random token never equals an earlier one, so no interleaving, eviction or expiry revives an entry.
- A scope without a token (never written, evicted, expired) is given one only if still absent, and that read
  is not cached: an entry is only ever filled under a token some daemon created.

Entries and tokens expire, so the cache holds only what was read lately. When the cache cannot be reached,
reads go to the database; a write whose invalidation fails answers UNAVAILABLE although the database
committed it (every write here is an upsert or a delete, so the caller's retry is safe and invalidates).
The daemon also remembers such scopes as pending: until it has given them fresh tokens, it serves no entry
of theirs, and it tries again at each read or write through the cache, so once the cache is back this
daemon never answers what the write replaced, retried or not. Other daemons may, until this one has
invalidated (at its next read or write through the cache) or the caller retried.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Sequence

import structlog

from stord.server.agents.port import (
    AgentMatch,
    AgentStatus,
    AgentStore,
    AgentVisibility,
    AgentWrite,
    StoredAgent,
)
from stord.server.kv.port import Keyspace, KeyValueStore, SetCondition, ValueEntry
from stord.server.manifests.port import (
    DocumentKey,
    HandlerManifestRecord,
    ManifestDocumentKind,
    ManifestStats,
    ManifestStore,
    TransformerRecord,
)
from stord.server.metrics import ReadCacheMeter
from stord.server.ports import Backend, JsonObject, Unavailable

__all__ = ["CachedAgentStore", "CachedManifestStore", "ReadThroughCache", "read_cache_for"]

_log = structlog.get_logger("stord.read_cache")

NAMESPACE = "_read-cache"
"""The cache namespace of every entry and token. Client namespaces start with a letter or digit, so no
client can read, list or clear it."""

ENTRY_TTL = 300.0
"""Seconds an entry lives after it was filled."""

GENERATION_TTL = 3600.0
"""Seconds a scope's token lives after its last write; an expired one only costs a miss."""

TOKEN_BYTES = 16


def read_cache_for(
    database: Backend, cache: Backend, meter: Callable[[], ReadCacheMeter] | None = None
) -> ReadThroughCache | None:
    """Return the read cache to put in front of `database`, None when caching would not help or be safe.

    Only a cache role on another engine, and not in process memory, caches: over the database itself it would
    read the same engine twice, and a memory cache (the default, or the fallback for an unreachable Redis)
    belongs to one daemon, which the writes of other daemons could not invalidate. A database in memory is
    as fast as any cache. `meter` makes the counters of hits and misses, only for a cache that is used.
    """
    if cache is database or cache.kind == "memory" or database.kind == "memory":
        return None
    return ReadThroughCache(cache.key_value(Keyspace.CACHE), None if meter is None else meter())


class ReadThroughCache:
    """Entries guarded by generation tokens (see the module's docstring); `meter` counts hits and misses."""

    def __init__(self, store: KeyValueStore, meter: ReadCacheMeter | None = None) -> None:
        self._store = store
        self._meter = meter
        self._pending: dict[str, int] = {}
        """Scopes whose invalidation failed -> the number of the last failure, to tell a later one apart."""
        self._failures = 0

    async def read(
        self, key: str, scopes: Sequence[str], load: Callable[[], Awaitable[bytes | None]]
    ) -> bytes | None:
        """Return the entry of `key`, or what `load` reads from the database (None: nothing to cache)."""
        if self._pending:
            if not await self._catch_up():  # the cache is unreachable: no need to wait for it twice
                if self._meter is not None:
                    self._meter.unavailable()
                return await load()
            if not self._pending.keys().isdisjoint(scopes):  # a write failed to invalidate it meanwhile
                return await load()
        try:
            *tokens, entry = await self._store.get_many(NAMESPACE, [*scopes, key])
        except Unavailable as error:
            _log.warning("read_cache_unavailable", error=str(error))
            if self._meter is not None:
                self._meter.unavailable()
            return await load()
        missing = [scope for scope, token in zip(scopes, tokens, strict=True) if token is None]
        if missing:
            if self._meter is not None:
                self._meter.miss()
            await self._start_generations(missing)
            return await load()
        stamp = b"".join(token for token in tokens if token is not None)
        if entry is not None and entry[: len(stamp)] == stamp:
            if self._meter is not None:
                self._meter.hit()
            return entry[len(stamp) :]
        if self._meter is not None:
            self._meter.miss()
        data = await load()
        if data is not None:
            await self._fill(key, stamp + data)
        return data

    async def invalidate(self, scopes: Sequence[str]) -> None:
        """Give every scope a fresh token; raise Unavailable when the cache cannot be reached."""
        try:
            await self._renew(scopes)
        except Unavailable as error:
            self._failures += 1
            self._pending.update(dict.fromkeys(scopes, self._failures))
            raise Unavailable(
                f"the write committed, but the read cache could not be invalidated ({error}); retry the write"
            ) from error
        if self._pending:
            await self._catch_up()

    async def _renew(self, scopes: Sequence[str]) -> None:
        entries = [ValueEntry(scope, secrets.token_bytes(TOKEN_BYTES), GENERATION_TTL) for scope in scopes]
        await self._store.set_many(NAMESPACE, entries)

    async def _catch_up(self) -> bool:
        """Give the pending scopes fresh tokens; return False when the cache cannot be reached."""
        pending = dict(self._pending)
        try:
            await self._renew(list(pending))
        except Unavailable as error:
            _log.warning("read_cache_unavailable", error=str(error))
            return False
        for scope, failure in pending.items():
            # A scope that failed again meanwhile renewed too early for that write: it stays pending.
            if self._pending.get(scope) == failure:
                del self._pending[scope]
        _log.info("read_cache_invalidated_late", scopes=len(pending))
        return True

    async def _start_generations(self, scopes: Sequence[str]) -> None:
        try:
            for scope in scopes:
                token = secrets.token_bytes(TOKEN_BYTES)
                generation = ValueEntry(scope, token, GENERATION_TTL)
                await self._store.set(NAMESPACE, generation, condition=SetCondition.IF_ABSENT)
        except Unavailable as error:
            _log.warning("read_cache_unavailable", error=str(error))

    async def _fill(self, key: str, entry: bytes) -> None:
        try:
            await self._store.set(NAMESPACE, ValueEntry(key, entry, ENTRY_TTL), condition=SetCondition.ALWAYS)
        except Unavailable as error:
            _log.warning("read_cache_unavailable", error=str(error))


def _agent_scope(namespace: str, uri: str) -> str:
    # Namespaces contain no `/`, so the namespace ends where the first `/` after the prefix is.
    return f"agent-generation/{namespace}/{uri}"


def _agent_key(namespace: str, uri: str) -> str:
    return f"agent/{namespace}/{uri}"


def _encode_agent(agent: StoredAgent) -> bytes:
    return json.dumps(
        {
            "uri": agent.uri,
            "name": agent.name,
            "version": agent.version,
            "status": agent.status.value,
            "visibility": agent.visibility.value,
            "owner": agent.owner,
            "configuration": agent.configuration,
            "update_time": agent.update_time,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def _decode_agent(data: bytes) -> StoredAgent:
    fields = json.loads(data)
    return StoredAgent(
        uri=fields["uri"],
        name=fields["name"],
        version=fields["version"],
        status=AgentStatus(fields["status"]),
        visibility=AgentVisibility(fields["visibility"]),
        owner=fields["owner"],
        configuration=fields["configuration"],
        update_time=fields["update_time"],
    )


class CachedAgentStore:
    """An AgentStore whose `get` reads through the cache; writes invalidate after they commit."""

    def __init__(self, database: AgentStore, cache: ReadThroughCache) -> None:
        self._database = database
        self._cache = cache

    async def get(self, namespace: str, uri: str) -> StoredAgent | None:
        async def load() -> bytes | None:
            agent = await self._database.get(namespace, uri)
            return None if agent is None else _encode_agent(agent)

        scopes = [_agent_scope(namespace, uri)]
        data = await self._cache.read(_agent_key(namespace, uri), scopes, load)
        return None if data is None else _decode_agent(data)

    async def set(self, namespace: str, agent: StoredAgent) -> AgentWrite:
        written = await self._database.set(namespace, agent)
        await self._cache.invalidate([_agent_scope(namespace, agent.uri)])
        return written

    async def delete(self, namespace: str, uri: str, *, principal: str) -> bool:
        deleted = await self._database.delete(namespace, uri, principal=principal)
        if deleted:
            await self._cache.invalidate([_agent_scope(namespace, uri)])
        return deleted

    async def search(
        self, namespace: str, query: str, *, principal: str, after: int | None, limit: int
    ) -> list[AgentMatch]:
        return await self._database.search(namespace, query, principal=principal, after=after, limit=limit)


def _manifests_scope(namespace: str) -> str:
    """The scope Clear invalidates: every manifest of the namespace."""
    return f"manifests-generation/{namespace}"


def _handler_scope(namespace: str, handler_id: str) -> str:
    """The scope StoreManifest invalidates: every version of one handler, and which one is the latest."""
    return f"manifest-generation/{namespace}/{handler_id}"


def _manifest_key(namespace: str, handler_id: str, version: str | None) -> str:
    # The length prefix keeps (`a/b`, `c`) and (`a`, `b/c`) apart; `latest` has no version at all.
    if version is None:
        return f"manifest-latest/{namespace}/{handler_id}"
    return f"manifest/{namespace}/{len(handler_id)}:{handler_id}/{version}"


def _encode_manifest(record: HandlerManifestRecord) -> bytes:
    fields = {
        "handler_id": record.handler_id,
        "version": record.version,
        "created_at": record.created_at,
        "document": record.document,
    }
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def _decode_manifest(data: bytes) -> HandlerManifestRecord:
    fields = json.loads(data)
    return HandlerManifestRecord(
        fields["handler_id"], fields["version"], fields["created_at"], fields["document"]
    )


class CachedManifestStore:
    """A ManifestStore whose `get_manifest` reads through the cache; manifest writes and Clear invalidate."""

    def __init__(self, database: ManifestStore, cache: ReadThroughCache) -> None:
        self._database = database
        self._cache = cache

    async def put_manifest(
        self, namespace: str, handler_id: str, version: str, document: JsonObject, *, created_at: int | None
    ) -> int:
        stored_at = await self._database.put_manifest(
            namespace, handler_id, version, document, created_at=created_at
        )
        await self._cache.invalidate([_handler_scope(namespace, handler_id)])
        return stored_at

    async def get_manifest(
        self, namespace: str, handler_id: str, version: str | None
    ) -> HandlerManifestRecord | None:
        async def load() -> bytes | None:
            record = await self._database.get_manifest(namespace, handler_id, version)
            return None if record is None else _encode_manifest(record)

        key = _manifest_key(namespace, handler_id, version)
        scopes = [_manifests_scope(namespace), _handler_scope(namespace, handler_id)]
        data = await self._cache.read(key, scopes, load)
        return None if data is None else _decode_manifest(data)

    async def list_manifests(
        self, namespace: str, handler_id: str, *, after: tuple[int, str] | None, limit: int
    ) -> list[HandlerManifestRecord]:
        return await self._database.list_manifests(namespace, handler_id, after=after, limit=limit)

    async def put_transformer(self, namespace: str, transformer: TransformerRecord) -> None:
        await self._database.put_transformer(namespace, transformer)

    async def get_transformer(self, namespace: str, transformer_id: str) -> TransformerRecord | None:
        return await self._database.get_transformer(namespace, transformer_id)

    async def transformers_between(
        self, namespace: str, handler_id: str, from_version: str, to_version: str
    ) -> list[TransformerRecord]:
        return await self._database.transformers_between(namespace, handler_id, from_version, to_version)

    async def put_document(
        self, namespace: str, kind: ManifestDocumentKind, key: DocumentKey, document: JsonObject
    ) -> None:
        await self._database.put_document(namespace, kind, key, document)

    async def get_document(
        self, namespace: str, kind: ManifestDocumentKind, key: DocumentKey
    ) -> JsonObject | None:
        return await self._database.get_document(namespace, kind, key)

    async def list_documents(
        self, namespace: str, kind: ManifestDocumentKind, *, after: DocumentKey | None, limit: int
    ) -> list[tuple[DocumentKey, JsonObject]]:
        return await self._database.list_documents(namespace, kind, after=after, limit=limit)

    async def clear(self, namespace: str) -> None:
        await self._database.clear(namespace)
        await self._cache.invalidate([_manifests_scope(namespace)])

    async def stats(self, namespace: str) -> ManifestStats:
        return await self._database.stats(namespace)

"""Dump and restore (transfer/port.py) of what Redis holds: key-value values and lists, of both roles.

Redis serves no other contract, so a restore refuses every other record with Unimplemented. A dump walks the
keys with SCAN, which is no snapshot (a value written meanwhile may or may not be in it), and reads each
value with its absolute expiry (PEXPIRETIME, milliseconds) and each list whole, a pipeline per SCAN page; it
comes in no particular order. A restore queues every write, deletions of replaced namespaces included, in
one MULTI/EXEC transaction sent when the caller commits: an import is applied whole or not at all, and is
held in memory until then.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from stord.server.backends._transfer import DUMP_BATCH, occupied, repeated_record
from stord.server.backends.redis import _layout
from stord.server.backends.redis._errors import unavailable_on_connection_errors
from stord.server.kv.port import Keyspace
from stord.server.ports import InvalidArgument, Unimplemented
from stord.server.transfer.port import ListItemRecord, TransferRecord, ValueRecord

__all__ = ["RedisTransferStore"]

_NO_EXPIRY = -1
_MISSING = -2
_KEYSPACES = {keyspace.value: keyspace for keyspace in Keyspace}


def _patterns(namespace: str | None) -> list[str]:
    if namespace is None:
        return [f"{_layout.ROOT}:*"]
    return [
        _layout.whole_namespace_match(_layout.namespace_prefix(keyspace, namespace)) for keyspace in Keyspace
    ]


def _parse(name: bytes) -> tuple[Keyspace, str, str, str] | None:
    """Return the keyspace, namespace, kind and user key of a stord key; None for another key."""
    parts = name.decode("utf-8", errors="replace").split(":", 4)
    if len(parts) != 5 or parts[0] != _layout.ROOT or parts[1] not in _KEYSPACES:
        return None
    return _KEYSPACES[parts[1]], parts[2], parts[3], parts[4]


async def _names(client: Redis, namespace: str | None) -> AsyncIterator[list[bytes]]:
    """Yield the names of the namespace's keys (None: of every namespace) in pages."""
    page: list[bytes] = []
    for pattern in _patterns(namespace):
        async for name in client.scan_iter(match=pattern, count=DUMP_BATCH):
            page.append(name if isinstance(name, bytes) else name.encode())
            if len(page) >= DUMP_BATCH:
                yield page
                page = []
    if page:
        yield page


async def _read_page(client: Redis, names: list[bytes], now: float) -> list[TransferRecord]:
    found = [(name, parsed) for name in names if (parsed := _parse(name)) is not None]
    keys = sorted(found, key=lambda item: (item[1][0].value, item[1][1], item[1][3], item[1][2]))
    async with client.pipeline(transaction=False) as pipe:
        for name, (_, _, kind, _) in keys:
            if kind == _layout.VALUE_KIND:
                pipe.get(name)
                pipe.pexpiretime(name.decode())
            else:
                pipe.lrange(name, 0, -1)
        replies: list[Any] = await pipe.execute()
    records: list[TransferRecord] = []
    position = 0
    for _, (keyspace, namespace, kind, key) in keys:
        if kind == _layout.VALUE_KIND:
            value, expiry = replies[position], replies[position + 1]
            position += 2
            expires_at = None if expiry == _NO_EXPIRY else expiry / 1000
            if value is None or expiry == _MISSING or (expires_at is not None and expires_at <= now):
                continue  # deleted or expired since the scan found it
            records.append(ValueRecord(namespace, keyspace, key, bytes(value), expires_at))
        else:
            items = replies[position]
            position += 1
            records += [
                ListItemRecord(namespace, keyspace, key, index, bytes(item))
                for index, item in enumerate(items)
            ]
    return records


class _Sink:
    """Queues an import's writes in one MULTI/EXEC transaction."""

    def __init__(self, client: Redis, pipe: Pipeline, *, replace: bool) -> None:
        self._client = client
        self._pipe = pipe
        self._replace = replace
        self._namespaces: set[str] = set()
        self._values: set[tuple[Keyspace, str, str]] = set()
        self._lengths: dict[tuple[Keyspace, str, str], int] = {}

    async def write(self, records: Sequence[TransferRecord]) -> None:
        for record in records:
            if not isinstance(record, ValueRecord | ListItemRecord):
                raise Unimplemented(
                    "the redis backend stores only key-value data, and the input holds other contracts'"
                    f" data too (a {type(record).__name__} of namespace {record.namespace!r}): import it"
                    " into sqlite or postgres"
                )
            if record.namespace not in self._namespaces:
                self._namespaces.add(record.namespace)
                await self._prepare(record.namespace)
            prefix = _layout.namespace_prefix(record.keyspace, record.namespace)
            if isinstance(record, ValueRecord):
                self._write_value(prefix, record)
            else:
                self._write_item(prefix, record)

    def _write_value(self, prefix: str, record: ValueRecord) -> None:
        identity = (record.keyspace, record.namespace, record.key)
        if identity in self._values:
            raise repeated_record(ValueError(f"value {record.key!r} of namespace {record.namespace!r}"))
        self._values.add(identity)
        expires_at = None if record.expires_at is None else max(1, round(record.expires_at * 1000))
        self._pipe.set(_layout.value_key(prefix, record.key), record.value, pxat=expires_at)

    def _write_item(self, prefix: str, record: ListItemRecord) -> None:
        identity = (record.keyspace, record.namespace, record.key)
        expected = self._lengths.get(identity, 0)
        if record.position != expected:
            # A Redis list is appended to: its items must come in order, every position once.
            raise InvalidArgument(
                "input",
                f"item {record.position} of list {record.key!r} of namespace {record.namespace!r} comes where"
                f" item {expected} was due",
            )
        self._lengths[identity] = expected + 1
        self._pipe.rpush(_layout.list_key(prefix, record.key), record.value)

    async def _prepare(self, namespace: str) -> None:
        """Queue the deletion of what the namespace holds (replace), or check that it holds nothing."""
        async for names in _names(self._client, namespace):
            if not self._replace:
                raise occupied(namespace, ["key-value values or lists"])
            self._pipe.unlink(*names)


class RedisTransferStore:
    """Dumps by SCAN; restores in one MULTI/EXEC transaction."""

    def __init__(self, client: Callable[[], Redis]) -> None:
        self._client = client

    async def count(self, namespace: str | None) -> int:
        with unavailable_on_connection_errors():
            total = 0
            async for names in _names(self._client(), namespace):
                total += len(names)
            return total

    async def dump(
        self, namespace: str | None, *, now: float
    ) -> AsyncGenerator[Sequence[TransferRecord], None]:
        client = self._client()
        with unavailable_on_connection_errors():
            async for names in _names(client, namespace):
                records = await _read_page(client, names, now)
                if records:
                    yield records

    @contextlib.asynccontextmanager
    async def restore(self, *, replace: bool) -> AsyncIterator[_Sink]:
        client = self._client()
        with unavailable_on_connection_errors():
            async with client.pipeline(transaction=True) as pipe:
                yield _Sink(client, pipe, replace=replace)
                await pipe.execute()

"""The asyncio client: `AsyncClient`, the twin of `_sync.py` method for method (a test checks they match)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import grpc

from stord.client import _codec
from stord.client._agents import AsyncAgents
from stord.client._alerts import AsyncAlerts
from stord.client._codec import Tls
from stord.client._documents import AsyncDocuments
from stord.client._events_async import AsyncEvents
from stord.client._jobs import AsyncJobs
from stord.client._kv import AsyncCache, AsyncDatabase
from stord.client._manifests import AsyncManifests
from stord.client._retry import RetryPolicy
from stord.client.errors import StordError
from stord.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["AsyncClient"]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class _Caller:
    """Invokes unary RPCs with the client's deadline and namespace, raising StordError on failure."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        timeout: float | None,
        namespace: str | None,
        principal: str | None = None,
        api_key: str | None = None,
        wait_for_ready: bool = False,
    ) -> None:
        self._channel = channel
        self.timeout = timeout
        self.metadata = _codec.metadata(namespace, principal, api_key)
        self.wait_for_ready = wait_for_ready
        """Whether calls wait for an unreachable daemon (up to their deadline) rather than fail at once."""

    async def __call__(
        self, method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response], request: _Request
    ) -> _Response:
        try:
            return await method(
                request, timeout=self.timeout, metadata=self.metadata, wait_for_ready=self.wait_for_ready
            )
        except grpc.RpcError as error:
            raise self.failure(error) from None

    def failure(self, error: grpc.RpcError) -> StordError:
        """Return the StordError of a failed call; a wait for a connection that ran out is Unavailable."""
        return _codec.call_failure(
            error,
            timeout=self.timeout,
            waited_for_ready=self.wait_for_ready,
            connected=lambda: self._channel.get_state(try_to_connect=False) is grpc.ChannelConnectivity.READY,
        )


class AsyncClient:
    """An asyncio connection to stord: `client.cache`, `client.db`, `client.get_info()`.

    `target` is `host:port` or `unix:/path/to.sock`. Every call gets `timeout` seconds (None: no deadline)
    and runs in `namespace` (None: the daemon's `default`), as `principal` (None: anonymous), which owns
    the agents the client writes.

    With a daemon that requires API keys, pass `api_key`: the key decides the namespace and principal, so
    leave those unset. `tls` encrypts the connection: True trusts the system's roots, a `Tls` names the
    daemon's CA and, for mTLS, the client's certificate.

    `retry` retries idempotent calls that failed with UNAVAILABLE, within their deadline, and lets calls
    wait for a daemon that is restarting (see `RetryPolicy`); None turns both off, so every call fails at
    once when the daemon cannot be reached.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        namespace: str | None = None,
        principal: str | None = None,
        api_key: str | None = None,
        tls: Tls | bool = False,
        timeout: float | None = _codec.DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = _codec.DEFAULT_RETRY,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self._channel = _codec.aio_channel(target, tls, options, retry)
        call = _Caller(
            self._channel, timeout, namespace, principal, api_key, _codec.waits_for_ready(retry, timeout)
        )
        self.cache = AsyncCache(self._channel, call)
        self.db = AsyncDatabase(self._channel, call)
        self.events = AsyncEvents(self._channel, call)
        self.alerts = AsyncAlerts(self._channel, call)
        self.agents = AsyncAgents(self._channel, call)
        self.manifests = AsyncManifests(self._channel, call)
        self.documents = AsyncDocuments(self._channel, call)
        self.jobs = AsyncJobs(self._channel, call)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self._call = call

    async def get_info(self) -> admin_pb2.GetInfoResponse:
        """Return the daemon's version, backends, fallbacks and uptime."""
        return await self._call(self._admin.GetInfo, admin_pb2.GetInfoRequest())

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

"""Revocation reaches open calls: a key reload ends every stream and long poll its key no longer allows.

A unary call is checked once, as it starts; a stream (IngestEvents, TailEvents) or a long poll (Dequeue with
a wait) may outlive its key by hours. Each such call runs under a `Watch`; after every reload of the keys file
(SIGHUP) `OpenCalls` checks each watched call's key again and ends the call with UNAUTHENTICATED when its key
is gone, or PERMISSION_DENIED when its role no longer allows the method or its namespace or principal changed.
The call ends at its next step, which the watch races against the verdict, so within moments of the reload.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager, suppress
from typing import TypeVar

from grpc import StatusCode

from stord.server.rpc.auth import ApiKey, KeyRing, permits
from stord.server.rpc.calls import Call

__all__ = ["OpenCalls", "Revoked", "Watch"]

_T = TypeVar("_T")


class Revoked(Exception):
    """The key of an open call was revoked or lost the right to it; the reason names neither key nor hash."""

    def __init__(self, status: StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Watch:
    """One open call under a key: races each step of the call against that key's revocation."""

    __slots__ = ("_loop", "_revoked", "call", "key", "verdict")

    def __init__(self, call: Call, key: ApiKey) -> None:
        self.call = call
        self.key = key
        self.verdict: Revoked | None = None
        self._loop = asyncio.get_running_loop()
        self._revoked = asyncio.Event()

    def revoke(self, verdict: Revoked) -> None:
        """End the call with `verdict`; safe from any thread."""
        self.verdict = verdict
        self._loop.call_soon_threadsafe(self._revoked.set)

    async def race(self, step: Awaitable[_T]) -> _T:
        """Return what `step` returns, or raise Revoked as soon as the key is revoked."""
        if self.verdict is not None:
            if asyncio.iscoroutine(step):
                step.close()
            raise self.verdict
        task = asyncio.ensure_future(step)
        revoked = asyncio.ensure_future(self._revoked.wait())
        try:
            await asyncio.wait((task, revoked), return_when=asyncio.FIRST_COMPLETED)
        finally:
            revoked.cancel()
            if not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await task
        if task.cancelled() and self.verdict is not None:
            raise self.verdict
        return task.result()

    async def guard(self, responses: AsyncIterator[_T]) -> AsyncIterator[_T]:
        """Yield the call's responses until it ends or its key is revoked (then raise Revoked)."""
        try:
            while True:
                try:
                    response = await self.race(anext(responses))
                except StopAsyncIteration:
                    return
                yield response
        finally:
            aclose = getattr(responses, "aclose", None)
            if aclose is not None:
                await aclose()


class OpenCalls:
    """The streams and long polls open now under an API key, checked again after each reload of the keys."""

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys
        self._lock = threading.Lock()  # reloads may run on another thread than the calls' loop
        self._open: set[Watch] = set()
        keys.on_reload(self._recheck)

    @contextmanager
    def watching(self, call: Call, key: ApiKey) -> Iterator[Watch]:
        """Watch one call under `key` for as long as the block runs."""
        watch = Watch(call, key)
        with self._lock:
            self._open.add(watch)
        try:
            yield watch
        finally:
            with self._lock:
                self._open.discard(watch)

    def _recheck(self) -> None:
        with self._lock:
            watches = list(self._open)
        for watch in watches:
            verdict = self._verdict(watch)
            if verdict is not None:
                watch.revoke(verdict)

    def _verdict(self, watch: Watch) -> Revoked | None:
        call = watch.call
        key = self._keys.current(watch.key)
        if key is None:
            return Revoked(StatusCode.UNAUTHENTICATED, "the API key of this call was revoked")
        if not permits(key.role, call.method):
            return Revoked(
                StatusCode.PERMISSION_DENIED, f"a {key.role.value} key may no longer call {call.method}"
            )
        if (key.namespace, key.principal) != (call.namespace, call.principal):
            return Revoked(StatusCode.PERMISSION_DENIED, "the API key's namespace or principal changed")
        return None

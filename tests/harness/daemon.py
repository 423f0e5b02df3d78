"""A real stord Daemon served from a background thread, so tests can use the blocking client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from stord.server.app import Daemon
from stord.server.config import Settings
from stord.server.ports import Clock, system_clock

_T = TypeVar("_T")


class DaemonThread:
    """Runs one Daemon on its own event loop; `target` is the address to give a client."""

    def __init__(self, settings: Settings, *, clock: Clock = system_clock) -> None:
        self.daemon = Daemon(settings, clock=clock)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stord-daemon", daemon=True)
        self.target = ""

    def start(self) -> DaemonThread:
        self._thread.start()
        self.run(self.daemon.start())
        self.target = f"127.0.0.1:{self.daemon.port}"
        return self

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 60) -> _T:
        """Run a coroutine on the daemon's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self, grace: float = 1.0) -> None:
        try:
            self.run(self.daemon.stop(grace))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()

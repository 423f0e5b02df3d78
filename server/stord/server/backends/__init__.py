"""Backends by URL scheme, what each declares it serves (DESIGN 3), and opening one (retrying an unreachable
one); one subpackage per engine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import unquote, urlsplit

import structlog

from stord.server.config import ConnectOptions, Settings, redact_url
from stord.server.ports import Backend, Capability, Clock, InvalidArgument, Unavailable, system_clock

__all__ = ["KINDS", "create_backend", "declared_capabilities", "open_with_retry", "sqlite_path"]

_log = structlog.get_logger("stord")

KINDS = ("memory", "sqlite", "postgres", "redis")
"""Every backend, by the name it reports as `kind`."""


def sqlite_path(url: str) -> Path:
    """Return the file of a `sqlite:///relative` or `sqlite:////absolute` URL."""
    if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
        raise InvalidArgument("database", f"SQLite URLs look like sqlite:///path/to/stord.db, got {url!r}")
    return Path(unquote(url[len("sqlite:///") :]))


def create_backend(url: str, settings: Settings, *, clock: Clock = system_clock) -> Backend:
    """Build (not open) the backend a URL names; imports only the driver that URL needs."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from stord.server.backends.memory import MemoryBackend

        return MemoryBackend(clock=clock)
    if scheme == "sqlite":
        from stord.server.backends.sqlite import SqliteBackend

        return SqliteBackend(sqlite_path(url), options=settings.sqlite, clock=clock)
    if scheme in ("postgresql", "postgres"):
        from stord.server.backends.postgres import PostgresBackend

        return PostgresBackend(url, options=settings.postgres, clock=clock)
    if scheme in ("redis", "rediss", "unix"):
        from stord.server.backends.redis import RedisBackend

        return RedisBackend(url, options=settings.redis)
    raise InvalidArgument("database", f"no backend serves {redact_url(url)!r}")


def declared_capabilities(kind: str) -> frozenset[Capability]:
    """Return what the backend `kind` declares it serves and supports, without building one."""
    if kind == "memory":
        from stord.server.backends.memory import MemoryBackend

        return MemoryBackend.CAPABILITIES
    if kind == "sqlite":
        from stord.server.backends.sqlite import SqliteBackend

        return SqliteBackend.CAPABILITIES
    if kind == "postgres":
        from stord.server.backends.postgres import PostgresBackend

        return PostgresBackend.CAPABILITIES
    if kind == "redis":
        from stord.server.backends.redis import RedisBackend

        return RedisBackend.CAPABILITIES
    raise ValueError(f"no backend is called {kind!r}; there are {', '.join(KINDS)}")


async def open_with_retry(backend: Backend, url: str, role: str, options: ConnectOptions) -> None:
    """Open a backend, retrying an unreachable one with bounded exponential backoff."""
    delay = options.initial_backoff
    for attempt in range(1, options.attempts + 1):
        try:
            await backend.open()
            return
        except Unavailable as error:
            if attempt == options.attempts:
                raise
            _log.warning(
                "backend_unreachable",
                role=role,
                url=redact_url(url),
                attempt=attempt,
                retry_in_s=delay,
                error=str(error),
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, options.max_backoff)

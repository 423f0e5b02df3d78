"""The daemon's daily retention pass over events and, on the same schedule, finished jobs.

Events: DESIGN 4.4, `STORD_RETENTION_DAYS`, default 90, 0 keeps all. Jobs: see `jobs.sweeper`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from stord.server.events.port import EventStore
from stord.server.ports import Backend, Unavailable, Unimplemented

__all__ = ["DAY_SECONDS", "apply_event_retention", "retain_events_daily"]

DAY_SECONDS = 86_400

_log = structlog.get_logger("stord.retention")


async def apply_event_retention(store: EventStore, days: int) -> None:
    """Delete every namespace's events older than `days` days by the store's clock, and emptied sessions."""
    cutoff = int(store.clock() * 1000) - days * DAY_SECONDS * 1000
    try:
        outcome = await store.apply_retention(None, cutoff)
    except Unavailable as error:
        _log.warning("event_retention_failed", error=str(error))
        return
    _log.info(
        "event_retention_applied",
        max_age_days=days,
        deleted_events=outcome.deleted_events,
        deleted_sessions=outcome.deleted_sessions,
    )


async def retain_events_daily(
    backend: Backend,
    days: int,
    *,
    interval: float = DAY_SECONDS,
    also: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Apply retention now and then every `interval` seconds; return at once when there is nothing to do.

    `also` is another retention pass on the same schedule (the job queue's).
    """
    store: EventStore | None = None
    if days > 0:
        with contextlib.suppress(Unimplemented):
            store = backend.events()
    if store is None and also is None:
        return
    while True:
        if store is not None:
            try:
                await apply_event_retention(store, days)
            except Exception:
                _log.exception("event_retention_crashed")
        if also is not None:
            try:
                await also()
            except Unavailable as error:
                _log.warning("retention_failed", error=str(error))
            except Exception:
                _log.exception("retention_crashed")
        await asyncio.sleep(interval)

"""The daemon's daily event retention pass (DESIGN 4.4): `STORD_RETENTION_DAYS`, default 90, 0 keeps all."""

from __future__ import annotations

import asyncio

import structlog

from stord.server.ports import Backend, EventStore, Unavailable, Unimplemented

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


async def retain_events_daily(backend: Backend, days: int, *, interval: float = DAY_SECONDS) -> None:
    """Apply retention now and then every `interval` seconds; return at once when there is nothing to do."""
    if days <= 0:
        return
    try:
        store = backend.events()
    except Unimplemented:
        return
    while True:
        try:
            await apply_event_retention(store, days)
        except Exception:
            _log.exception("event_retention_crashed")
        await asyncio.sleep(interval)

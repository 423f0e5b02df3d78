"""What a backend declares it supports, as dapr components declare features; tests and the daemon read it."""

from __future__ import annotations

import enum

__all__ = ["CONTRACT_CAPABILITIES", "Capability"]


class Capability(enum.Enum):
    """One thing a backend can do: serve a contract, or behave in a way some callers rely on."""

    KEY_VALUE = "key_value"
    DOCUMENTS = "documents"
    JOBS = "jobs"
    EVENTS = "events"
    AGENTS = "agents"
    MANIFESTS = "manifests"
    TRANSFER = "transfer"
    """`stord export` and `stord import`."""

    INJECTABLE_CLOCK = "injectable_clock"
    """Expiry, leases and schedules follow the clock the daemon gives the backend (Redis keeps its own)."""
    INDEXES = "indexes"
    """CreateIndex builds an index that filters and sorts use (memory accepts it and scans)."""
    SHARED_BY_PROCESSES = "shared_by_processes"
    """Several daemon processes (`--workers`, daemons on one database) serve one copy of the data."""
    CROSS_PROCESS_WAKEUPS = "cross_process_wakeups"
    """An enqueue or an event stored through one daemon wakes waiters on another at once, not by polling."""


CONTRACT_CAPABILITIES = frozenset(
    {
        Capability.KEY_VALUE,
        Capability.DOCUMENTS,
        Capability.JOBS,
        Capability.EVENTS,
        Capability.AGENTS,
        Capability.MANIFESTS,
        Capability.TRANSFER,
    }
)
"""The capabilities that name a contract: a backend without one answers its RPCs with UNIMPLEMENTED."""

"""Time, JSON objects and the domain errors every store raises."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Returns the current time in seconds since the epoch. Backends take one so tests can move time."""

system_clock: Clock = time.time


class StoreError(Exception):
    """A failure with a meaning for the caller; the server turns each subclass into one gRPC status."""


class NotFound(StoreError):
    """The named record does not exist."""


class AlreadyExists(StoreError):
    """A record with that identity exists already."""


class Conflict(StoreError):
    """The record changed since the caller read it (an expected revision did not match)."""


class InvalidArgument(StoreError):
    """The request is malformed; `field` names the offending request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class FailedPrecondition(StoreError):
    """The system is not in the state the operation needs (a lost lease, a broken hash chain)."""


class NamespaceOccupied(FailedPrecondition):
    """An import met a namespace that holds data in the target; `namespace` names it."""

    def __init__(self, namespace: str, message: str) -> None:
        super().__init__(message)
        self.namespace = namespace


class Unavailable(StoreError):
    """The backend cannot be reached or cannot serve now; the caller may retry."""


class ResourceExhausted(StoreError):
    """A resource the write needs has run out (the disk is full); the caller may retry once it is freed."""


class Unimplemented(StoreError):
    """The configured backend does not serve this contract."""


class PermissionDenied(StoreError):
    """The caller may not do this to this record (it belongs to another principal)."""


JsonObject = dict[str, object]
"""A JSON object as `json.loads` returns it; stores keep it and give it back unchanged."""

"""gRPC status codes as exceptions: catch `StordError`, or the one case you handle."""

from __future__ import annotations

import grpc

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "Conflict",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "StordError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "from_rpc_error",
]


class StordError(Exception):
    """A call failed; `code` is the gRPC status and `message` the server's explanation."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(StordError):
    """The request was malformed; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(StordError):
    """The named record does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(StordError):
    """A record with that identity exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(StordError):
    """The record changed since it was read (ABORTED); read it again and retry."""

    code = grpc.StatusCode.ABORTED


class FailedPrecondition(StordError):
    """The operation does not fit the current state (a lost lease, a broken hash chain)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(StordError):
    """The daemon or its backend cannot serve right now; retrying later may succeed."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(StordError):
    """No answer came before the deadline; the operation may or may not have happened."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(StordError):
    """A message, batch or quota was over its limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(StordError):
    """No valid credentials were sent."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(StordError):
    """The credentials do not allow this call."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unimplemented(StordError):
    """The daemon's configured backend does not serve this contract."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Cancelled(StordError):
    """The call was cancelled."""

    code = grpc.StatusCode.CANCELLED


class Internal(StordError):
    """A bug in the daemon; the message carries a request id to find it in the daemon's log."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[StordError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Conflict,
        FailedPrecondition,
        Unavailable,
        DeadlineExceeded,
        ResourceExhausted,
        Unauthenticated,
        PermissionDenied,
        Unimplemented,
        Cancelled,
        Internal,
    )
}


def from_rpc_error(error: grpc.RpcError) -> StordError:
    """Return the StordError for a failed call (a grpc.Call, sync or async)."""
    code: grpc.StatusCode = error.code()
    details: str = error.details() or code.name
    cls = _BY_CODE.get(code, StordError)
    return cls(details, code)

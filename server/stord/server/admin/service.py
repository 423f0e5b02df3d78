"""AdminService: what an operator needs to know about the running daemon."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from stord.v1 import admin_pb2 as pb
from stord.v1 import admin_pb2_grpc

__all__ = ["AdminServicer", "BackendStatus"]

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(slots=True)
class BackendStatus:
    """The daemon's live view of the backend filling one role."""

    role: str
    kind: str
    url: str
    healthy: bool = True
    detail: str = ""
    configured_url: str | None = None
    """Set when this backend is a fallback for the configured one."""


_ROLES = {"database": pb.BACKEND_ROLE_DATABASE, "cache": pb.BACKEND_ROLE_CACHE}


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Reports version, backends, fallbacks and uptime."""

    def __init__(self, version: str, statuses: Callable[[], Sequence[BackendStatus]], started: float) -> None:
        self._version = version
        self._statuses = statuses
        self._started = started

    async def GetInfo(self, request: pb.GetInfoRequest, context: Context) -> pb.GetInfoResponse:
        start_time = Timestamp()
        start_time.FromNanoseconds(int(self._started * 1e9))
        uptime = Duration()
        uptime.FromNanoseconds(int((time.time() - self._started) * 1e9))
        backends = [
            pb.BackendInfo(
                role=_ROLES[status.role],
                kind=status.kind,
                url=status.url,
                healthy=status.healthy,
                detail=status.detail,
                fallback=status.configured_url is not None,
                configured_url=status.configured_url or "",
            )
            for status in self._statuses()
        ]
        return pb.GetInfoResponse(
            version=self._version, backends=backends, start_time=start_time, uptime=uptime
        )

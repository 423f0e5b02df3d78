"""AlertService for both clients: how the daemon delivered the alerts it raised (alerts.proto)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from stord.v1 import alerts_pb2 as pb
from stord.v1 import alerts_pb2_grpc

if TYPE_CHECKING:
    from stord.client._async import _Caller as _AsyncCaller
    from stord.client._sync import _Caller

__all__ = ["Alerts", "AsyncAlerts"]


class Alerts:
    """AlertService: webhook deliveries of the alerts the daemon raises. `Client.alerts`."""

    def __init__(self, channel: grpc.Channel, call: _Caller) -> None:
        self._stub = alerts_pb2_grpc.AlertServiceStub(channel)
        self._call = call

    def deliveries(self, alert_id: str) -> list[pb.AlertDelivery]:
        """Return an alert's deliveries, one per notice (triggered, resolved) and channel."""
        request = pb.ListAlertDeliveriesRequest(alert_id=alert_id)
        return list(self._call(self._stub.ListAlertDeliveries, request).deliveries)


class AsyncAlerts:
    """AlertService: webhook deliveries of the alerts the daemon raises. `AsyncClient.alerts`."""

    def __init__(self, channel: grpc.aio.Channel, call: _AsyncCaller) -> None:
        self._stub = alerts_pb2_grpc.AlertServiceStub(channel)
        self._call = call

    async def deliveries(self, alert_id: str) -> list[pb.AlertDelivery]:
        """Return an alert's deliveries, one per notice (triggered, resolved) and channel."""
        request = pb.ListAlertDeliveriesRequest(alert_id=alert_id)
        return list((await self._call(self._stub.ListAlertDeliveries, request)).deliveries)

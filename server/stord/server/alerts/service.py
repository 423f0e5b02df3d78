"""AlertService (alerts.proto) over the alert state store: how the daemon delivered the alerts it raised."""

from __future__ import annotations

from typing import Any

import grpc

from stord.server.alerts.port import AlertStateStore, Delivery, DeliveryKind, DeliveryStatus
from stord.server.rpc import calls
from stord.server.rpc import validate as check
from stord.v1 import alerts_pb2 as pb
from stord.v1 import alerts_pb2_grpc

__all__ = ["AlertServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

_KINDS = {
    DeliveryKind.TRIGGERED: pb.DELIVERY_KIND_TRIGGERED,
    DeliveryKind.RESOLVED: pb.DELIVERY_KIND_RESOLVED,
}
_STATUSES = {
    DeliveryStatus.PENDING: pb.DELIVERY_STATUS_PENDING,
    DeliveryStatus.DELIVERED: pb.DELIVERY_STATUS_DELIVERED,
    DeliveryStatus.FAILED: pb.DELIVERY_STATUS_FAILED,
    DeliveryStatus.UNSUPPORTED: pb.DELIVERY_STATUS_UNSUPPORTED,
}


def _delivery_message(delivery: Delivery) -> pb.AlertDelivery:
    message = pb.AlertDelivery(
        alert_id=delivery.alert_id,
        rule_id=delivery.rule_id,
        kind=_KINDS[delivery.kind],
        channel=delivery.channel,
        status=_STATUSES[delivery.status],
        attempts=delivery.attempts,
        last_error=delivery.last_error or "",
        update_time=check.timestamp_from_milliseconds(delivery.updated_at),
    )
    if delivery.delivered_at is not None:
        message.delivered_time.CopyFrom(check.timestamp_from_milliseconds(delivery.delivered_at))
    return message


class AlertServicer(alerts_pb2_grpc.AlertServiceServicer):
    """Validates and translates; the store keeps the deliveries."""

    def __init__(self, states: AlertStateStore) -> None:
        self._states = states

    async def ListAlertDeliveries(
        self, request: pb.ListAlertDeliveriesRequest, context: Context
    ) -> pb.ListAlertDeliveriesResponse:
        alert_id = check.identifier(request.alert_id, "alert_id")
        deliveries = await self._states.list_deliveries(calls.namespace(), alert_id)
        return pb.ListAlertDeliveriesResponse(deliveries=[_delivery_message(each) for each in deliveries])

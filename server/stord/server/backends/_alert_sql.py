"""The alert_deliveries table's columns and row mapping, shared by the SQL backends."""

from __future__ import annotations

from collections.abc import Sequence

from stord.server.alerts.port import Delivery, DeliveryKind, DeliveryStatus

DELIVERY_COLUMNS = "alert_id, kind, channel, rule_id, status, attempts, last_error, updated_at, delivered_at"


def delivery_values(delivery: Delivery) -> tuple[object, ...]:
    """Return a delivery's columns in DELIVERY_COLUMNS order."""
    d = delivery
    return (d.alert_id, d.kind.value, d.channel, d.rule_id, d.status.value, d.attempts, d.last_error,
            d.updated_at, d.delivered_at)  # fmt: skip


def delivery_from_row(row: Sequence[object]) -> Delivery:
    """Return the delivery of a row in DELIVERY_COLUMNS order."""
    alert_id, kind, channel, rule_id, status, attempts, last_error, updated_at, delivered_at = row
    return Delivery(
        alert_id=str(alert_id),
        kind=DeliveryKind(kind),
        channel=str(channel),
        rule_id=str(rule_id),
        status=DeliveryStatus(status),
        attempts=int(attempts),  # type: ignore[call-overload]
        last_error=None if last_error is None else str(last_error),
        updated_at=int(updated_at),  # type: ignore[call-overload]
        delivered_at=None if delivered_at is None else int(delivered_at),  # type: ignore[call-overload]
    )

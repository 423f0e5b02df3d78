"""The storage primitives alert evaluation needs beyond the event store: rule state, leases, deliveries.

Rules, history entries and the events an alert emits stay with the event store (`EventStore`); this port
holds what only the evaluator needs, so every backend keeps it in tables of its own (migration 0010).

Times are milliseconds since the epoch, UTC, as in the event store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from stord.server.events.port import AnalyticsFigures
from stord.server.ports import Backend, Unimplemented

__all__ = [
    "AlertStateStore",
    "Delivery",
    "DeliveryKind",
    "DeliveryStatus",
    "RuleState",
    "ServesAlerts",
    "alert_state_store",
]


@dataclass(frozen=True, slots=True)
class RuleState:
    """What the last evaluation of a rule left: the open alert, if the rule holds."""

    alert_id: str | None = None
    """The history entry of the alert raised and not resolved yet; None while the rule does not hold."""
    triggered_at: int | None = None


class DeliveryKind(enum.Enum):
    """Which notice of an alert a delivery carries."""

    TRIGGERED = "triggered"
    RESOLVED = "resolved"


class DeliveryStatus(enum.Enum):
    """Where one notice to one channel stands."""

    PENDING = "pending"
    """Being attempted, or waiting for the next attempt."""
    DELIVERED = "delivered"
    """The channel answered 2xx."""
    FAILED = "failed"
    """Every attempt failed within the delivery deadline, or the daemon stopped before it succeeded."""
    UNSUPPORTED = "unsupported"
    """The channel is not an http(s) URL; nothing was sent."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notice of one alert to one channel."""

    alert_id: str
    kind: DeliveryKind
    channel: str
    rule_id: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    updated_at: int
    delivered_at: int | None


class AlertStateStore(Protocol):
    """Per-rule evaluation state and leases, and delivery status, shared by every daemon on the database."""

    async def rule_namespaces(self) -> list[str]:
        """Return the namespaces holding at least one alert rule, ascending."""
        ...

    async def tagged_totals(
        self, namespace: str, *, from_time: int, to_time: int, agent_id: str | None, tags: tuple[str, ...]
    ) -> AnalyticsFigures:
        """Return the analytics totals of the range's events (of one agent, unless None) whose session
        carries any of `tags`: the figures `EventStore.analytics` computes, over those events only."""
        ...

    async def claim_evaluation(
        self, namespace: str, rule_id: str, *, slot: int, token: str, now: int, lease_until: int
    ) -> RuleState | None:
        """Take the rule's evaluation of interval `slot` and return its state; None when it is not ours.

        It is ours when no evaluation of `slot` (or a later one) finished and none holds an unexpired lease on
        it: so each interval's evaluation is done once across daemons, and one whose daemon died is taken
        over once its lease runs out. Creates the rule's state row on first use.
        """
        ...

    async def finish_evaluation(
        self, namespace: str, rule_id: str, *, slot: int, token: str, state: RuleState
    ) -> bool:
        """Store the new state and mark `slot` done if the claim `token` still holds; return whether so."""
        ...

    async def resolve_alert(self, namespace: str, alert_id: str, resolved_at: int) -> None:
        """Set the resolved time of an alert history entry that has none (nothing when it is gone)."""
        ...

    async def save_delivery(self, namespace: str, delivery: Delivery) -> None:
        """Create or replace the delivery of (alert_id, kind, channel)."""
        ...

    async def list_deliveries(self, namespace: str, alert_id: str) -> list[Delivery]:
        """Return an alert's deliveries by kind (triggered first) then channel."""
        ...


@runtime_checkable
class ServesAlerts(Protocol):
    """A backend that keeps alert state (every database backend but Redis)."""

    def alerts(self) -> AlertStateStore: ...


def alert_state_store(backend: Backend) -> AlertStateStore:
    """Return the backend's alert state store; raise Unimplemented when it keeps none."""
    if not isinstance(backend, ServesAlerts):
        raise Unimplemented(
            f"the {backend.kind} backend does not evaluate alert rules; use sqlite or postgres"
        )
    return backend.alerts()

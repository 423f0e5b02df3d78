"""Alert evaluation state and deliveries in dicts, beside the memory event store's rules and history."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from stord.server.alerts.port import Delivery, RuleState
from stord.server.backends.memory._events import MemoryEventStore, _figures
from stord.server.events.port import AnalyticsFigures


@dataclass(slots=True)
class _Evaluation:
    slot: int = -1
    done_slot: int = -1
    lease_token: str | None = None
    lease_expires_at: int = 0
    state: RuleState = field(default_factory=RuleState)


class MemoryAlertStateStore:
    """Reads and writes happen between two awaits, so the event loop orders them as a lock would."""

    def __init__(self, events: MemoryEventStore) -> None:
        self._events = events
        self._evaluations: dict[tuple[str, str], _Evaluation] = {}
        self._deliveries: dict[tuple[str, str], dict[tuple[str, str], Delivery]] = {}

    async def rule_namespaces(self) -> list[str]:
        return sorted(namespace for namespace, space in self._events.spaces() if space.rules)

    async def tagged_totals(
        self, namespace: str, *, from_time: int, to_time: int, agent_id: str | None, tags: tuple[str, ...]
    ) -> AnalyticsFigures:
        space = dict(self._events.spaces()).get(namespace)
        if space is None:
            return _figures([])
        wanted = set(tags)
        tagged = {session.id for session in space.sessions.values() if wanted.intersection(session.tags)}
        return _figures(  # the event store's own figures: tagged totals are analytics' totals
            [
                record
                for record in space.records.values()
                if from_time <= record.event.timestamp <= to_time
                and (agent_id is None or record.event.agent_id == agent_id)
                and record.event.session_id in tagged
            ]
        )

    async def claim_evaluation(
        self, namespace: str, rule_id: str, *, slot: int, token: str, now: int, lease_until: int
    ) -> RuleState | None:
        evaluation = self._evaluations.setdefault((namespace, rule_id), _Evaluation())
        free = evaluation.slot < slot or evaluation.lease_expires_at <= now
        if evaluation.done_slot >= slot or evaluation.slot > slot or not free:
            return None
        evaluation.slot, evaluation.lease_token, evaluation.lease_expires_at = slot, token, lease_until
        return evaluation.state

    async def finish_evaluation(
        self, namespace: str, rule_id: str, *, slot: int, token: str, state: RuleState
    ) -> bool:
        evaluation = self._evaluations.get((namespace, rule_id))
        if evaluation is None or evaluation.slot != slot or evaluation.lease_token != token:
            return False
        evaluation.done_slot, evaluation.lease_token, evaluation.state = slot, None, state
        return True

    async def resolve_alert(self, namespace: str, alert_id: str, resolved_at: int) -> None:
        history = self._events.history(namespace)
        entry = history.get(alert_id)
        if entry is not None and entry.resolved_at is None:
            history[alert_id] = dataclasses.replace(entry, resolved_at=resolved_at)

    async def save_delivery(self, namespace: str, delivery: Delivery) -> None:
        by_key = self._deliveries.setdefault((namespace, delivery.alert_id), {})
        by_key[(delivery.kind.value, delivery.channel)] = delivery

    async def list_deliveries(self, namespace: str, alert_id: str) -> list[Delivery]:
        by_key = self._deliveries.get((namespace, alert_id), {})
        # The port promises the triggered notice before the resolved one, whatever their names sort as.
        order = {"triggered": 0, "resolved": 1}
        return [by_key[key] for key in sorted(by_key, key=lambda key: (order[key[0]], key[1]))]

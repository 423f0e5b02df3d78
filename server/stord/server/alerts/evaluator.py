"""One rule, one interval: measure the rule's window, and raise or resolve its alert when that changed.

What each condition measures over the window [now - window_minutes, now] (both ends included), from the
event store's analytics (its rollups where it has them) within the rule's agent scope, or, for a rule scoped
by tags, from the same figures over the events of the sessions carrying any of its tags:

- error_rate_exceeds: errors per event (0 without events) > threshold; errors as analytics counts them;
- cost_exceeds: the sum of cost_tracked `costUsd` > threshold (USD);
- latency_exceeds: the mean tool_response `durationMs` (0 without any) > threshold (ms);
- event_count_exceeds: the number of events > threshold;
- no_events_for: holds while the window has no event (the value is the count; the threshold is unused).

The daemon's own alert events (agent `stord.alerts`) are not counted, so an alert never feeds its own rule.
A rule that starts to hold records a history entry and stores an `alert_triggered` event; one that stops
holding resolves the entry and stores an `alert_resolved` event. Ids are derived from the rule and the
interval, so a daemon that takes over an interval whose first evaluator died repeats nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from stord.server.alerts.port import AlertStateStore, DeliveryKind, RuleState
from stord.server.events.chain import JsonValue, canonical_json, format_timestamp
from stord.server.events.port import (
    AlertCondition,
    AlertHistoryEntry,
    AlertRule,
    AnalyticsQuery,
    EventFilter,
    EventInput,
    EventStore,
    EventType,
    Granularity,
    Severity,
)
from stord.server.ports import AlreadyExists, NotFound

__all__ = ["ALERT_AGENT", "ALERT_SESSION", "Measurement", "Notice", "evaluate_rule", "measure"]

ALERT_AGENT = "stord.alerts"
"""The agent of the events the daemon stores for alerts; left out of every rule's measurement."""
ALERT_SESSION = "stord.alerts"
"""The session (one hash chain per namespace) of those events."""

_MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Measurement:
    """A rule's watched value over its window, and whether the rule holds."""

    value: float
    holds: bool
    from_time: int
    to_time: int


@dataclass(frozen=True, slots=True)
class Notice:
    """An alert raised or resolved, as its webhooks carry it."""

    kind: DeliveryKind
    namespace: str
    rule: AlertRule
    alert_id: str
    measurement: Measurement
    triggered_at: int
    resolved_at: int | None


async def measure(
    events: EventStore, states: AlertStateStore, namespace: str, rule: AlertRule, now: int
) -> Measurement:
    """Return the rule's value over the window ending at `now` and whether its condition holds."""
    from_time = now - rule.window_minutes * _MINUTE_MS
    if rule.scope_tags:  # alert events are never in a tagged session
        totals = await states.tagged_totals(
            namespace, from_time=from_time, to_time=now, agent_id=rule.scope_agent_id, tags=rule.scope_tags
        )
    else:
        query = AnalyticsQuery(from_time, now, rule.scope_agent_id, Granularity.DAY)
        totals = (await events.analytics(namespace, query)).totals
    event_count = totals.event_count
    if rule.scope_agent_id is None and not rule.scope_tags:
        own = EventFilter(agent_id=ALERT_AGENT, from_time=from_time, to_time=now)
        event_count -= await events.count_events(namespace, own)
    condition = rule.condition
    if condition is AlertCondition.NO_EVENTS_FOR:
        return Measurement(float(event_count), event_count == 0, from_time, now)
    if condition is AlertCondition.ERROR_RATE_EXCEEDS:
        value = totals.error_count / event_count if event_count else 0.0
    elif condition is AlertCondition.COST_EXCEEDS:
        value = totals.total_cost_usd
    elif condition is AlertCondition.LATENCY_EXCEEDS:
        value = totals.avg_latency_ms
    else:
        value = float(event_count)
    return Measurement(value, value > rule.threshold, from_time, now)


def _derived_id(*parts: str) -> str:
    """Return an id that every daemon derives alike from the same parts (32 hex digits)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _message(rule: AlertRule, measurement: Measurement) -> str:
    if rule.condition is AlertCondition.NO_EVENTS_FOR:
        return f"{rule.name}: no events in the last {rule.window_minutes} min"
    return (
        f"{rule.name}: {rule.condition.value} {measurement.value:g} > {rule.threshold:g}"
        f" over the last {rule.window_minutes} min"
    )


def _alert_event(kind: DeliveryKind, rule: AlertRule, alert_id: str, measurement: Measurement) -> EventInput:
    payload: dict[str, JsonValue] = {
        "alertId": alert_id,
        "ruleId": rule.id,
        "ruleName": rule.name,
        "condition": rule.condition.value,
        "value": measurement.value,
        "threshold": rule.threshold,
        "windowMinutes": rule.window_minutes,
        "windowStart": format_timestamp(measurement.from_time),
        "windowEnd": format_timestamp(measurement.to_time),
    }
    if rule.scope_agent_id is not None:
        payload["scopeAgentId"] = rule.scope_agent_id
    triggered = kind is DeliveryKind.TRIGGERED
    return EventInput(
        id=_derived_id(alert_id, kind.value),
        timestamp=measurement.to_time,
        session_id=ALERT_SESSION,
        agent_id=ALERT_AGENT,
        event_type=EventType.ALERT_TRIGGERED if triggered else EventType.ALERT_RESOLVED,
        severity=Severity.WARN if triggered else Severity.INFO,
        payload=canonical_json(payload),
        metadata="{}",
    )


async def evaluate_rule(
    events: EventStore,
    states: AlertStateStore,
    namespace: str,
    rule: AlertRule,
    *,
    slot: int,
    token: str,
    now: int,
    lease_until: int,
) -> tuple[bool, Notice | None]:
    """Evaluate the rule for interval `slot` unless another daemon has it; return whether this one did.

    And the notice to deliver: None when nothing changed, or when this daemon's lease ran out before it
    finished (the daemon that took over delivers).
    """
    state = await states.claim_evaluation(
        namespace, rule.id, slot=slot, token=token, now=now, lease_until=lease_until
    )
    if state is None:
        return False, None
    measurement = await measure(events, states, namespace, rule, now)
    notice: Notice | None = None
    if measurement.holds and state.alert_id is None:
        alert_id = _derived_id(rule.id, str(slot))
        entry = AlertHistoryEntry(
            alert_id, rule.id, now, None, measurement.value, rule.threshold, _message(rule, measurement)
        )
        try:
            await events.record_alert(namespace, entry)
        except AlreadyExists:
            pass  # recorded by a daemon whose lease on this interval ran out
        except NotFound:
            return False, None  # the rule was deleted meanwhile
        await events.insert_events(
            namespace, [_alert_event(DeliveryKind.TRIGGERED, rule, alert_id, measurement)]
        )
        state = RuleState(alert_id, now)
        notice = Notice(DeliveryKind.TRIGGERED, namespace, rule, alert_id, measurement, now, None)
    elif not measurement.holds and state.alert_id is not None:
        alert_id, triggered_at = state.alert_id, state.triggered_at or now
        await states.resolve_alert(namespace, alert_id, now)
        await events.insert_events(
            namespace, [_alert_event(DeliveryKind.RESOLVED, rule, alert_id, measurement)]
        )
        state = RuleState()
        notice = Notice(DeliveryKind.RESOLVED, namespace, rule, alert_id, measurement, triggered_at, now)
    finished = await states.finish_evaluation(namespace, rule.id, slot=slot, token=token, state=state)
    return finished, notice if finished else None

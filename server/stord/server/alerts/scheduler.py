"""Every enabled rule of every namespace, evaluated once per interval across the daemons sharing a database.

Intervals are numbered from the epoch by the store's clock (`slot = now // interval`). A daemon looks four
times per interval and evaluates each rule whose current interval nobody has claimed (`claim_evaluation`).
So while another daemon lives, a rule's interval is claimed within its first quarter; a claim is a lease of
a quarter interval, and when its daemon dies mid-evaluation a live one takes the rule over at its first look
after the lease ran out, by three quarters into the interval: no interval goes unevaluated.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog

from stord.server.alerts.evaluator import Notice, evaluate_rule
from stord.server.alerts.port import AlertStateStore, alert_state_store
from stord.server.alerts.webhook import WebhookDeliverer
from stord.server.config import Settings
from stord.server.events.port import AlertRule, EventStore
from stord.server.ports import Backend, StoreError, Unimplemented

__all__ = ["AlertScheduler", "PassOutcome", "alert_scheduler"]

_log = structlog.get_logger("stord.alerts")

LOOKS_PER_INTERVAL = 4
CONCURRENT_RULES = 8
"""Rules evaluated at once: their queries overlap on PostgreSQL and share SQLite's group commits."""
_RULE_PAGE = 500


@dataclass(frozen=True, slots=True)
class PassOutcome:
    """What one pass did: the rules it evaluated (namespace, rule id) and the alerts raised or resolved."""

    evaluated: list[tuple[str, str]] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)


class AlertScheduler:
    """Runs evaluation passes: on the schedule once `start`ed, and `run_once` on demand."""

    def __init__(
        self,
        events: EventStore,
        states: AlertStateStore,
        *,
        interval: float,
        deliverer: WebhookDeliverer | None,
    ) -> None:
        self._events = events
        self._states = states
        self._interval_ms = max(1, int(interval * 1000))
        self._lease_ms = max(1, self._interval_ms // LOOKS_PER_INTERVAL)
        self._deliverer = deliverer
        self._schedule: asyncio.Task[None] | None = None
        self._pass = asyncio.Lock()
        """One pass at a time in this daemon: an on-demand pass waits for a background one to end."""

    @property
    def deliverer(self) -> WebhookDeliverer | None:
        """The webhook deliverer, None when deliveries are off."""
        return self._deliverer

    def _now(self) -> int:
        return int(self._events.clock() * 1000)

    async def run_once(self) -> PassOutcome:
        """Evaluate every enabled rule whose current interval is unclaimed."""
        async with self._pass:
            slot = self._now() // self._interval_ms
            token = uuid.uuid4().hex
            outcome = PassOutcome()
            running = asyncio.Semaphore(CONCURRENT_RULES)

            async def evaluate(namespace: str, rule: AlertRule) -> None:
                async with running:
                    evaluated, notice = await self._evaluate(namespace, rule, slot, token)
                if evaluated:
                    outcome.evaluated.append((namespace, rule.id))
                if notice is not None:
                    outcome.notices.append(notice)
                    if self._deliverer is not None:
                        self._deliverer.submit(notice)

            async with asyncio.TaskGroup() as rules:
                for namespace in await self._states.rule_namespaces():
                    async for rule in self._enabled_rules(namespace):
                        rules.create_task(evaluate(namespace, rule))
            return outcome

    async def _enabled_rules(self, namespace: str) -> AsyncIterator[AlertRule]:
        after: str | None = None
        while True:
            rules = await self._events.list_alert_rules(namespace, after=after, limit=_RULE_PAGE)
            for rule in rules:
                if rule.enabled:
                    yield rule
            if len(rules) < _RULE_PAGE:
                return
            after = rules[-1].id

    async def _evaluate(
        self, namespace: str, rule: AlertRule, slot: int, token: str
    ) -> tuple[bool, Notice | None]:
        now = self._now()
        try:
            evaluated, notice = await evaluate_rule(
                self._events,
                self._states,
                namespace,
                rule,
                slot=slot,
                token=token,
                now=now,
                lease_until=now + self._lease_ms,
            )
        except StoreError as error:  # the next look tries again once the claim's lease has run out
            _log.warning("alert_evaluation_failed", namespace=namespace, rule_id=rule.id, error=str(error))
            return False, None
        except Exception:  # a bug with one rule must not stop the pass for the others
            _log.exception("alert_evaluation_crashed", namespace=namespace, rule_id=rule.id)
            return False, None
        if notice is not None:
            _log.info(
                f"alert_{notice.kind.value}",
                namespace=namespace,
                rule_id=rule.id,
                alert_id=notice.alert_id,
                value=notice.measurement.value,
            )
        return evaluated, notice

    def start(self) -> None:
        """Run passes on the schedule, in the background, until `stop_schedule` or `close`."""
        if self._schedule is None:
            self._schedule = asyncio.create_task(self._run_forever(), name="stord-alerts")

    async def stop_schedule(self) -> None:
        """Stop the scheduled passes (a pass in progress is cancelled; its claims' leases run out)."""
        schedule, self._schedule = self._schedule, None
        if schedule is not None:
            schedule.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await schedule

    async def _run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except StoreError as error:
                _log.warning("alert_pass_failed", error=str(error))
            except Exception:
                _log.exception("alert_pass_crashed")
            await asyncio.sleep(self._interval_ms / 1000 / LOOKS_PER_INTERVAL)

    async def close(self) -> None:
        """Stop the schedule, end the deliveries in progress and release the HTTP connections."""
        await self.stop_schedule()
        if self._deliverer is not None:
            await self._deliverer.close()


def alert_scheduler(database: Backend, settings: Settings, *, user_agent: str) -> AlertScheduler | None:
    """Return the scheduler of the database's rules; None when evaluation is off or it has no events."""
    if settings.alert_interval <= 0:
        return None
    try:
        events = database.events()
        states = alert_state_store(database)
    except Unimplemented:
        return None
    options = settings.alerts
    deliverer = WebhookDeliverer(
        states,
        clock=events.clock,
        secrets={name: secret.get_secret_value() for name, secret in options.webhook_secrets.items()},
        delivery_deadline=options.delivery_deadline,
        initial_backoff=options.initial_backoff,
        max_backoff=options.max_backoff,
        request_timeout=options.request_timeout,
        user_agent=user_agent,
    )
    return AlertScheduler(events, states, interval=settings.alert_interval, deliverer=deliverer)

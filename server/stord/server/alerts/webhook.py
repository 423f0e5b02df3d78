"""Webhook delivery of alert notices: a signed JSON POST per channel, retried with backoff for a bounded time.

Every http:// or https:// entry of a rule's `notify_channels` gets each notice (triggered, then resolved) in
a POST with a JSON body (`notice_body`) and these headers:

- `X-Stord-Delivery`: `<alert id>.<triggered|resolved>`, the same on every attempt, for receivers to drop
  repeats (an answer lost on the way back makes the daemon send again);
- `X-Stord-Timestamp`: Unix seconds when the attempt was signed;
- `X-Stord-Signature`: `sha256=` and the lowercase hex HMAC-SHA256, keyed with the namespace's webhook secret
  (`alerts.webhook_secrets` in the YAML settings; `*` for every other namespace), of the timestamp, a
  period and the body: `HMAC(secret, f"{timestamp}.{body}")`. Left out when no secret applies.

A 2xx answer delivers; 408, 429, 5xx and connection failures are tried again after a pause that doubles from
`initial_backoff` to `max_backoff` seconds, until `delivery_deadline` seconds have gone; any other answer
fails at once. Each state is saved (`AlertStateStore.save_delivery`). Other channels are marked unsupported.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

import httpx
import orjson
import structlog

from stord.server.alerts.evaluator import Notice
from stord.server.alerts.port import AlertStateStore, Delivery, DeliveryStatus
from stord.server.events.chain import format_timestamp
from stord.server.ports import Clock, StoreError

__all__ = ["WebhookDeliverer", "notice_body", "signature"]

_log = structlog.get_logger("stord.alerts")

_RETRIED_STATUSES = frozenset({408, 429})
_MAX_ERROR_CHARACTERS = 500


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Return the X-Stord-Signature value of a body signed at `timestamp` (Unix seconds, as sent)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def notice_body(notice: Notice) -> dict[str, object]:
    """Return the JSON object a webhook receives."""
    rule, measurement = notice.rule, notice.measurement
    return {
        "event": f"alert_{notice.kind.value}",
        "namespace": notice.namespace,
        "alert_id": notice.alert_id,
        "rule": {
            "id": rule.id,
            "name": rule.name,
            "condition": rule.condition.value,
            "threshold": rule.threshold,
            "window_minutes": rule.window_minutes,
            "scope": {"agent_id": rule.scope_agent_id, "tags": list(rule.scope_tags)},
        },
        "window": {
            "start": format_timestamp(measurement.from_time),
            "end": format_timestamp(measurement.to_time),
        },
        "value": measurement.value,
        "threshold": rule.threshold,
        "triggered_at": format_timestamp(notice.triggered_at),
        "resolved_at": None if notice.resolved_at is None else format_timestamp(notice.resolved_at),
    }


class WebhookDeliverer:
    """Delivers notices in background tasks over one long-lived HTTP connection pool."""

    def __init__(
        self,
        states: AlertStateStore,
        *,
        clock: Clock,
        secrets: Mapping[str, str],
        delivery_deadline: float,
        initial_backoff: float,
        max_backoff: float,
        request_timeout: float,
        user_agent: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._states = states
        self._clock = clock
        self._secrets = dict(secrets)
        self._deadline = delivery_deadline
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._wall_clock = wall_clock
        self._http = httpx.AsyncClient(
            timeout=request_timeout, follow_redirects=False, headers={"user-agent": user_agent}
        )
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, notice: Notice) -> None:
        """Start delivering the notice to each of its rule's channels."""
        for channel in dict.fromkeys(notice.rule.notify_channels):
            task = asyncio.create_task(self._deliver(notice, channel), name="stord-alert-webhook")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Wait until every delivery started so far has ended (tests, and a graceful stop)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        """Stop the deliveries in progress (each is saved as failed) and close the connections."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await self._http.aclose()

    def _secret(self, namespace: str) -> str | None:
        return self._secrets.get(namespace, self._secrets.get("*"))

    async def _save(
        self,
        notice: Notice,
        channel: str,
        status: DeliveryStatus,
        attempts: int,
        error: str | None,
    ) -> None:
        now = int(self._clock() * 1000)
        delivery = Delivery(
            alert_id=notice.alert_id,
            kind=notice.kind,
            channel=channel,
            rule_id=notice.rule.id,
            status=status,
            attempts=attempts,
            last_error=None if error is None else error[:_MAX_ERROR_CHARACTERS],
            updated_at=now,
            delivered_at=now if status is DeliveryStatus.DELIVERED else None,
        )
        try:
            await self._states.save_delivery(notice.namespace, delivery)
        except StoreError as store_error:
            _log.warning("alert_delivery_not_saved", alert_id=notice.alert_id, error=str(store_error))

    async def _deliver(self, notice: Notice, channel: str) -> None:
        if not channel.startswith(("http://", "https://")):
            await self._save(notice, channel, DeliveryStatus.UNSUPPORTED, 0, "only http(s) webhooks are sent")
            return
        body = orjson.dumps(notice_body(notice))
        headers = {
            "content-type": "application/json",
            "x-stord-delivery": f"{notice.alert_id}.{notice.kind.value}",
        }
        secret = self._secret(notice.namespace)
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._deadline
        pause = self._initial_backoff
        attempts = 0
        error: str | None = None
        try:
            while True:
                attempts += 1
                timestamp = str(int(self._wall_clock()))
                headers["x-stord-timestamp"] = timestamp
                if secret is not None:
                    headers["x-stord-signature"] = signature(secret, timestamp, body)
                retry, error = await self._attempt(channel, body, headers)
                if error is None:
                    await self._save(notice, channel, DeliveryStatus.DELIVERED, attempts, None)
                    _log.info("alert_delivered", alert_id=notice.alert_id, kind=notice.kind.value,
                              attempts=attempts)  # fmt: skip
                    return
                if not retry or loop.time() + pause > give_up_at:
                    break
                await self._save(notice, channel, DeliveryStatus.PENDING, attempts, error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._max_backoff)
        except asyncio.CancelledError:
            await self._save(notice, channel, DeliveryStatus.FAILED, attempts, "the daemon stopped")
            raise
        await self._save(notice, channel, DeliveryStatus.FAILED, attempts, error)
        _log.warning("alert_delivery_failed", alert_id=notice.alert_id, attempts=attempts, error=error)

    async def _attempt(self, channel: str, body: bytes, headers: dict[str, str]) -> tuple[bool, str | None]:
        """POST once; return whether a failure is worth retrying, and the failure (None when delivered)."""
        try:
            response = await self._http.post(channel, content=body, headers=headers)
        except httpx.HTTPError as failure:
            return True, f"{type(failure).__name__}: {failure}"
        if response.is_success:
            return False, None
        status = response.status_code
        return status in _RETRIED_STATUSES or status >= 500, f"HTTP {status}"

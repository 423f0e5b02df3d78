"""Alert evaluation by the daemon (issue 16) through the real gRPC API, on every backend serving events.

Time is the daemons' injected clock: each test moves it into a new evaluation interval and runs the pass the
schedule would run (`Daemon.evaluate_alerts`), so nothing waits for the schedule's real-time timer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import hmac
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stord.client import AsyncClient, Client, Unimplemented, make_event
from stord.server.alerts.scheduler import PassOutcome
from stord.server.config import AlertOptions, Settings
from stord.v1 import alerts_pb2
from stord.v1 import events_pb2 as pb
from tests.conftest import DATABASE_BACKENDS, make_backend_url
from tests.harness.clock import ManualClock
from tests.harness.daemon import DaemonThread

INTERVAL = 60.0
SECRET = "webhook-secret-for-tests"


def _settings(url: str, **extra: Any) -> Settings:
    return Settings(
        listen="127.0.0.1:0",
        database=url,
        cache="memory://",
        log_level="warning",
        alert_interval=INTERVAL,
        alerts=AlertOptions.model_validate(
            {"webhook_secrets": {"*": SECRET}, "initial_backoff": 0.05, "delivery_deadline": 20}
        ),
        **extra,
    )


@dataclass
class AlertDaemon:
    """A daemon with alert evaluation on, and its clock; passes run when a test asks (`evaluate`).

    The schedule is stopped, so no pass of its own interleaves with the test's (it would evaluate the
    interval first and leave the test's pass nothing to report).
    """

    thread: DaemonThread
    clock: ManualClock

    def __post_init__(self) -> None:
        if self.thread.daemon.alerts is not None:
            self.thread.run(self.thread.daemon.alerts.stop_schedule())

    def client(self, namespace: str) -> Client:
        return Client(self.thread.target, namespace=namespace)

    def next_interval(self) -> None:
        """Move the clock one second into the next evaluation interval."""
        now = self.clock()
        self.clock.advance(INTERVAL - now % INTERVAL + 1)

    def evaluate(self) -> PassOutcome:
        return self.thread.run(self.thread.daemon.evaluate_alerts())

    def deliveries(self, namespace: str, alert_id: str) -> list[alerts_pb2.AlertDelivery]:
        with self.client(namespace) as client:
            return client.alerts.deliveries(alert_id)


@pytest.fixture(scope="module", params=DATABASE_BACKENDS)
def alert_daemon(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AlertDaemon]:
    url = make_backend_url(request, request.param, tmp_path_factory.mktemp(request.param))
    clock = ManualClock()
    thread = DaemonThread(_settings(url), clock=clock).start()
    yield AlertDaemon(thread, clock)
    thread.stop()


@dataclass
class Tenant:
    daemon: AlertDaemon
    namespace: str
    client: Client
    agent: str = field(default_factory=lambda: f"agent-{uuid.uuid4().hex[:8]}")

    def rule(
        self,
        condition: int,
        threshold: float,
        *,
        channels: tuple[str, ...] = (),
        tags: tuple[str, ...] = (),
    ) -> pb.AlertRule:
        return self.client.events.create_alert_rule(
            pb.AlertRule(
                name=f"rule {condition}",
                enabled=True,
                condition=condition,  # type: ignore[arg-type]
                threshold=threshold,
                window_minutes=10,
                scope=pb.AlertScope(agent_id=self.agent, tags=tags),
                notify_channels=channels,
            )
        )

    def send(
        self, kind: str, count: int = 1, *, severity: str = "info", session: str = "s1", **payload: Any
    ) -> None:
        events = [
            make_event(session, self.agent, kind, severity=severity, payload=payload) for _ in range(count)
        ]
        self.client.events.insert(events)

    def history(self, rule_id: str) -> list[pb.AlertHistoryEntry]:
        return list(self.client.events.alert_history(rule_id=rule_id).entries)

    def alert_events(self, kind: str) -> list[pb.Event]:
        found = self.client.events.query(event_types=[kind], order="asc")
        return list(found.events)


@pytest.fixture
def tenant(alert_daemon: AlertDaemon) -> Iterator[Tenant]:
    namespace = f"al-{uuid.uuid4().hex[:12]}"
    with alert_daemon.client(namespace) as client:
        yield Tenant(alert_daemon, namespace, client)


def _evaluated(outcome: PassOutcome, namespace: str) -> list[str]:
    """The rules of one namespace a pass evaluated."""
    return [rule_id for each, rule_id in outcome.evaluated if each == namespace]


def _mine(outcome: PassOutcome, tenant: Tenant) -> list[str]:
    """The kinds of the notices a pass raised in the tenant's namespace."""
    return [notice.kind.value for notice in outcome.notices if notice.namespace == tenant.namespace]


CONDITIONS = {
    # condition: (threshold, what makes it hold)
    "error_rate": (pb.ALERT_CONDITION_ERROR_RATE_EXCEEDS, 0.5),
    "cost": (pb.ALERT_CONDITION_COST_EXCEEDS, 3.0),
    "latency": (pb.ALERT_CONDITION_LATENCY_EXCEEDS, 500.0),
    "event_count": (pb.ALERT_CONDITION_EVENT_COUNT_EXCEEDS, 2.0),
}


def _make_hold(tenant: Tenant, name: str) -> None:
    if name == "error_rate":
        tenant.send("tool_error", 2, severity="error")
        tenant.send("tool_call")  # 2 errors of 3 events: 0.67 > 0.5
    elif name == "cost":
        tenant.send("cost_tracked", costUsd=5)
    elif name == "latency":
        tenant.send("tool_response", durationMs=900)
    else:
        tenant.send("custom", 3)


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_a_condition_triggers_then_resolves_when_its_window_passes(tenant: Tenant, name: str) -> None:
    condition, threshold = CONDITIONS[name]
    rule = tenant.rule(condition, threshold)
    daemon = tenant.daemon
    daemon.next_interval()
    assert _mine(daemon.evaluate(), tenant) == []  # nothing happened yet
    assert tenant.history(rule.id) == []

    _make_hold(tenant, name)
    daemon.next_interval()
    assert _mine(daemon.evaluate(), tenant) == ["triggered"]
    [entry] = tenant.history(rule.id)
    assert not entry.HasField("resolved_time")
    assert entry.current_value > threshold
    assert entry.threshold == threshold
    [triggered] = tenant.alert_events("alert_triggered")
    assert triggered.payload["alertId"] == entry.id
    assert triggered.payload["ruleId"] == rule.id

    daemon.next_interval()  # still holding: nothing new
    assert _mine(daemon.evaluate(), tenant) == []
    assert len(tenant.history(rule.id)) == 1

    daemon.clock.advance(11 * 60)  # the events leave the 10-minute window
    daemon.next_interval()
    assert _mine(daemon.evaluate(), tenant) == ["resolved"]
    [entry] = tenant.history(rule.id)
    assert entry.HasField("resolved_time")
    [resolved] = tenant.alert_events("alert_resolved")
    assert resolved.payload["alertId"] == entry.id
    assert len(tenant.alert_events("alert_triggered")) == 1


def test_no_events_for_triggers_on_silence_and_resolves_on_an_event(tenant: Tenant) -> None:
    rule = tenant.rule(pb.ALERT_CONDITION_NO_EVENTS_FOR, 0)
    daemon = tenant.daemon
    daemon.next_interval()
    assert _mine(daemon.evaluate(), tenant) == ["triggered"]
    [entry] = tenant.history(rule.id)
    assert entry.current_value == 0
    tenant.send("custom")
    daemon.next_interval()
    assert _mine(daemon.evaluate(), tenant) == ["resolved"]
    assert tenant.history(rule.id)[0].HasField("resolved_time")


def test_a_rule_scoped_by_tags_counts_only_the_events_of_sessions_with_one_of_them(tenant: Tenant) -> None:
    rule = tenant.rule(pb.ALERT_CONDITION_EVENT_COUNT_EXCEEDS, 3, tags=("checkout", "refund"))
    daemon = tenant.daemon
    tenant.send("session_started", session="plain", tags=["search"])
    tenant.send("custom", 10, session="plain")
    daemon.next_interval()
    assert _mine(daemon.evaluate(), tenant) == []  # 11 events, none in a tagged session
    tenant.send("session_started", session="cart", tags=["checkout"])
    tenant.send("custom", 3, session="cart")
    daemon.next_interval()
    assert _mine(daemon.evaluate(), tenant) == ["triggered"]
    [entry] = tenant.history(rule.id)
    assert entry.current_value == 4
    daemon.clock.advance(11 * 60)
    daemon.next_interval()
    assert _mine(daemon.evaluate(), tenant) == ["resolved"]


def test_alert_events_do_not_count_for_an_unscoped_rule(tenant: Tenant) -> None:
    # An unscoped silence rule would otherwise be resolved by its own alert_triggered event, and flap.
    rule = tenant.client.events.create_alert_rule(
        pb.AlertRule(name="quiet", enabled=True, condition=pb.ALERT_CONDITION_NO_EVENTS_FOR, window_minutes=5)
    )
    daemon = tenant.daemon
    daemon.next_interval()
    assert _mine(daemon.evaluate(), tenant) == ["triggered"]
    for _ in range(2):
        daemon.next_interval()
        assert _mine(daemon.evaluate(), tenant) == []
    assert len(tenant.history(rule.id)) == 1


def test_an_interval_is_evaluated_once_and_a_disabled_rule_never(tenant: Tenant) -> None:
    rule = tenant.rule(pb.ALERT_CONDITION_EVENT_COUNT_EXCEEDS, 100)
    disabled = tenant.rule(pb.ALERT_CONDITION_NO_EVENTS_FOR, 0)
    tenant.client.events.update_alert_rule(pb.AlertRule(id=disabled.id, enabled=False), fields=["enabled"])
    daemon = tenant.daemon
    daemon.next_interval()
    assert _evaluated(daemon.evaluate(), tenant.namespace) == [rule.id]
    assert _evaluated(daemon.evaluate(), tenant.namespace) == []  # the same interval
    assert tenant.history(disabled.id) == []


def test_triggered_alerts_reach_tail_events(tenant: Tenant) -> None:
    tenant.rule(pb.ALERT_CONDITION_NO_EVENTS_FOR, 0)
    with tenant.client.events.tail(event_types=["alert_triggered"]) as tail:
        tenant.daemon.next_interval()
        assert _mine(tenant.daemon.evaluate(), tenant) == ["triggered"]
        [delivered] = next(iter(tail))
    assert delivered.event_type == pb.EVENT_TYPE_ALERT_TRIGGERED
    assert delivered.agent_id == "stord.alerts"


# Webhooks -----------------------------------------------------------------------------------------------


class _Receiver(http.server.ThreadingHTTPServer):
    """A loopback webhook receiver that answers `failure` to the first `failures` requests, then 204."""

    def __init__(self, failures: int, failure: int = 503) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.failures = failures
        self.failure = failure
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.accepted: list[tuple[dict[str, str], bytes]] = []
        self.got_accepted = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}
        with self.server.got_accepted:
            self.server.requests.append((headers, body))
            fail = len(self.server.requests) <= self.server.failures
            if not fail:
                self.server.accepted.append((headers, body))
                self.server.got_accepted.notify_all()
        self.send_response(self.server.failure if fail else 204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _receiving(failures: int, failure: int = 503) -> Iterator[_Receiver]:
    server = _Receiver(failures, failure)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    with _receiving(failures=2) as server:
        yield server


def _wait_accepted(receiver: _Receiver, count: int) -> None:
    with receiver.got_accepted:
        assert receiver.got_accepted.wait_for(lambda: len(receiver.accepted) >= count, timeout=30)


def test_a_webhook_gets_each_notice_once_after_transient_failures(
    tenant: Tenant, receiver: _Receiver
) -> None:
    channels = (receiver.url, "mailto:ops@example.com")
    rule = tenant.rule(pb.ALERT_CONDITION_NO_EVENTS_FOR, 0, channels=channels)
    daemon = tenant.daemon
    daemon.next_interval()
    assert _mine(daemon.evaluate(), tenant) == ["triggered"]
    _wait_accepted(receiver, 1)
    tenant.send("custom")
    daemon.next_interval()
    assert _mine(daemon.evaluate(), tenant) == ["resolved"]
    _wait_accepted(receiver, 2)
    deliverer = daemon.thread.daemon.alerts.deliverer  # type: ignore[union-attr]
    daemon.thread.run(deliverer.wait())  # type: ignore[union-attr]

    assert len(receiver.requests) == 4  # two refused, then the triggered notice, then the resolved one
    assert [json.loads(body)["event"] for _, body in receiver.accepted] == [
        "alert_triggered",
        "alert_resolved",
    ]
    [entry] = tenant.history(rule.id)
    for headers, body in receiver.accepted:
        expected = hmac.new(
            SECRET.encode(), f"{headers['x-stord-timestamp']}.".encode() + body, hashlib.sha256
        )
        assert hmac.compare_digest(headers["x-stord-signature"], f"sha256={expected.hexdigest()}")
        notice = json.loads(body)
        assert notice["alert_id"] == entry.id
        assert notice["rule"]["id"] == rule.id
        assert notice["namespace"] == tenant.namespace
        assert notice["threshold"] == 0
        assert {"start", "end"} <= set(notice["window"])
    first_attempts = [headers["x-stord-delivery"] for headers, _ in receiver.requests[:3]]
    assert first_attempts == [f"{entry.id}.triggered"] * 3  # the same delivery id on every attempt

    by_key = {(d.kind, d.channel): d for d in daemon.deliveries(tenant.namespace, entry.id)}
    webhook = by_key[(alerts_pb2.DELIVERY_KIND_TRIGGERED, receiver.url)]
    assert webhook.status == alerts_pb2.DELIVERY_STATUS_DELIVERED
    assert webhook.attempts == 3
    assert webhook.HasField("delivered_time")
    assert by_key[(alerts_pb2.DELIVERY_KIND_RESOLVED, receiver.url)].attempts == 1
    mail = by_key[(alerts_pb2.DELIVERY_KIND_TRIGGERED, "mailto:ops@example.com")]
    assert mail.status == alerts_pb2.DELIVERY_STATUS_UNSUPPORTED

    async def read_async() -> list[alerts_pb2.AlertDelivery]:
        async with AsyncClient(daemon.thread.target, namespace=tenant.namespace) as client:
            return await client.alerts.deliveries(entry.id)

    assert asyncio.run(read_async()) == daemon.deliveries(tenant.namespace, entry.id)


def test_a_webhook_that_refuses_fails_at_once_and_says_why(tenant: Tenant) -> None:
    with _receiving(failures=100, failure=400) as refusing:
        tenant.rule(pb.ALERT_CONDITION_NO_EVENTS_FOR, 0, channels=(refusing.url,))
        daemon = tenant.daemon
        daemon.next_interval()
        [notice] = [each for each in daemon.evaluate().notices if each.namespace == tenant.namespace]
        deliverer = daemon.thread.daemon.alerts.deliverer  # type: ignore[union-attr]
        daemon.thread.run(deliverer.wait())  # type: ignore[union-attr]
        assert len(refusing.requests) == 1  # a 400 is not worth repeating
    [delivery] = daemon.deliveries(tenant.namespace, notice.alert_id)
    assert delivery.status == alerts_pb2.DELIVERY_STATUS_FAILED
    assert (delivery.attempts, delivery.last_error) == (1, "HTTP 400")
    assert not delivery.HasField("delivered_time")


def test_the_daemon_evaluates_on_its_own_schedule() -> None:
    # The real clock and a short interval: the background schedule, not an on-demand pass, raises the alert.
    settings = _settings("memory://").model_copy(update={"alert_interval": 0.2})
    thread = DaemonThread(settings).start()
    try:
        with Client(thread.target, namespace="scheduled") as client:
            rule = client.events.create_alert_rule(
                pb.AlertRule(
                    name="quiet", enabled=True, condition=pb.ALERT_CONDITION_NO_EVENTS_FOR, window_minutes=1
                )
            )
            deadline = time.monotonic() + 30
            while not client.events.alert_history(rule_id=rule.id).entries:
                assert time.monotonic() < deadline, "no evaluation within 30 s"
                time.sleep(0.05)
    finally:
        thread.stop()


# Several daemons on one PostgreSQL ------------------------------------------------------------------------


def test_two_daemons_on_one_postgres_evaluate_each_rule_once_per_interval(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_backend_url(request, "postgres", tmp_path)
    clock = ManualClock()
    daemons = [AlertDaemon(DaemonThread(_settings(url), clock=clock).start(), clock) for _ in range(2)]
    try:
        namespace = f"al-{uuid.uuid4().hex[:12]}"
        with daemons[0].client(namespace) as client:
            tenant = Tenant(daemons[0], namespace, client)
            rules = {tenant.rule(pb.ALERT_CONDITION_NO_EVENTS_FOR, 0).id for _ in range(20)}
            for _ in range(3):
                daemons[0].next_interval()
                with concurrent.futures.ThreadPoolExecutor(len(daemons)) as pool:
                    outcomes = list(pool.map(AlertDaemon.evaluate, daemons))
                evaluated = [rule_id for outcome in outcomes for rule_id in _evaluated(outcome, namespace)]
                assert sorted(evaluated) == sorted(rules)  # each rule once, by one daemon or the other
            triggered = tenant.alert_events("alert_triggered")
            assert len(triggered) == len(rules)
            assert sum(len(tenant.history(rule_id)) for rule_id in rules) == len(rules)
    finally:
        for daemon in daemons:
            daemon.thread.stop()


def test_an_interval_whose_daemon_died_is_taken_over_once_its_lease_ends(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_backend_url(request, "postgres", tmp_path)
    clock = ManualClock()
    survivor = AlertDaemon(DaemonThread(_settings(url), clock=clock).start(), clock)
    try:
        namespace = f"al-{uuid.uuid4().hex[:12]}"
        with survivor.client(namespace) as client:
            rule = Tenant(survivor, namespace, client).rule(pb.ALERT_CONDITION_NO_EVENTS_FOR, 0)
            survivor.next_interval()
            now = int(clock() * 1000)
            slot = now // int(INTERVAL * 1000)
            states = survivor.thread.daemon.alerts._states  # type: ignore[union-attr]
            # A daemon claims the interval and dies before finishing it.
            claimed = survivor.thread.run(
                states.claim_evaluation(
                    namespace, rule.id, slot=slot, token="dead", now=now, lease_until=now + 20_000
                )
            )
            assert claimed is not None
            assert _evaluated(survivor.evaluate(), namespace) == []  # the dead daemon's lease holds
            clock.advance(21)  # the lease ran out; still the same interval
            assert _evaluated(survivor.evaluate(), namespace) == [rule.id]
    finally:
        survivor.thread.stop()


def test_redis_has_no_alert_service(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = make_backend_url(request, "redis", tmp_path)
    thread = DaemonThread(_settings(url), clock=ManualClock()).start()
    try:
        assert thread.daemon.alerts is None
        with pytest.raises(Unimplemented):
            AlertDaemon(thread, ManualClock()).deliveries("default", "x")
    finally:
        thread.stop()

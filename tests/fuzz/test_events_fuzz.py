"""Stateful fuzzing of the event store: boundary writes, every read path, real page tokens mutated."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from stord.v1 import events_pb2 as pb
from stord.v1 import events_pb2_grpc
from tests.conftest import DATABASE_BACKENDS, Daemons
from tests.fuzz._edges import (
    FUZZ_SETTINGS,
    Caller,
    floats,
    int32s,
    mutated_token,
    structs,
    texts,
    timestamps,
)

SESSIONS = st.sampled_from(["s1", "s2", "ключ-сессия"])
EVENT_TYPES = st.sampled_from([value for value in pb.EventType.values() if value])
SEVERITIES = st.sampled_from([value for value in pb.Severity.values() if value])
GRANULARITIES = st.sampled_from(list(pb.Granularity.values()))


class EventMachine(RuleBasedStateMachine):
    target = ""

    def __init__(self) -> None:
        super().__init__()
        self.call = Caller(self.target)
        self.stub = events_pb2_grpc.EventStoreServiceStub(self.call.channel)
        self.stored: dict[str, pb.Event] = {}
        self.rule_ids: set[str] = set()

    def teardown(self) -> None:
        self.call.close()

    # Writes ------------------------------------------------------------------------------------------

    @rule(
        session=SESSIONS,
        at=st.one_of(st.none(), timestamps()),
        kind=EVENT_TYPES,
        severity=SEVERITIES,
        payload=structs(),
        metadata=structs(),
    )
    def insert(
        self, session: str, at: object, kind: Any, severity: Any, payload: object, metadata: object
    ) -> None:
        event = pb.Event(session_id=session, agent_id="agent", event_type=kind, severity=severity)
        if at is not None:
            event.timestamp.CopyFrom(at)  # type: ignore[arg-type]
        event.payload.CopyFrom(payload)  # type: ignore[arg-type]
        event.metadata.CopyFrom(metadata)  # type: ignore[arg-type]
        answer = self.call(self.stub.InsertEvents, pb.InsertEventsRequest(events=[event]))
        if isinstance(answer, pb.InsertEventsResponse):
            for stored in answer.events:
                self.stored[stored.id] = stored

    @rule(
        session=SESSIONS, start=timestamps(), end=timestamps(), cost=floats(), count=int32s(), tag=texts(64)
    )
    def upsert_session(
        self, session: str, start: object, end: object, cost: float, count: int, tag: str
    ) -> None:
        message = pb.Session(id=session, agent_id="agent", total_cost_usd=cost, event_count=count, tags=[tag])
        message.start_time.CopyFrom(start)  # type: ignore[arg-type]
        message.end_time.CopyFrom(end)  # type: ignore[arg-type]
        paths = ["start_time", "end_time", "total_cost_usd", "event_count", "tags"]
        request = pb.UpsertSessionRequest(session=message, update_mask=FieldMask(paths=paths))
        answer = self.call(self.stub.UpsertSession, request)
        if isinstance(answer, pb.UpsertSessionResponse):
            got = self.call(self.stub.GetSession, pb.GetSessionRequest(id=session))
            assert isinstance(got, pb.GetSessionResponse)
            assert got.session == answer.session

    @rule(rule_id=st.sampled_from(["r1", "r2", "r3"]), threshold=floats(), window=int32s(), name=texts(256))
    def create_alert_rule(self, rule_id: str, threshold: float, window: int, name: str) -> None:
        message = pb.AlertRule(
            id=rule_id,
            name=name,
            enabled=True,
            condition=pb.ALERT_CONDITION_ERROR_RATE_EXCEEDS,
            threshold=threshold,
            window_minutes=window,
        )
        answer = self.call(self.stub.CreateAlertRule, pb.CreateAlertRuleRequest(rule=message))
        if isinstance(answer, pb.CreateAlertRuleResponse):
            self.rule_ids.add(rule_id)
            got = self.call(self.stub.GetAlertRule, pb.GetAlertRuleRequest(id=rule_id))
            assert isinstance(got, pb.GetAlertRuleResponse)
            assert got.rule == answer.rule

    @rule(triggered=timestamps(), resolved=timestamps(), value=floats(), threshold=floats())
    def record_alert(self, triggered: object, resolved: object, value: float, threshold: float) -> None:
        entry = pb.AlertHistoryEntry(rule_id="r1", current_value=value, threshold=threshold)
        entry.triggered_time.CopyFrom(triggered)  # type: ignore[arg-type]
        entry.resolved_time.CopyFrom(resolved)  # type: ignore[arg-type]
        self.call(self.stub.RecordAlert, pb.RecordAlertRequest(entry=entry))

    @rule(days=st.one_of(int32s(), st.integers(1, 36_500), st.sampled_from([0, 1, 36_500, 36_501])))
    def apply_retention(self, days: int) -> None:
        answer = self.call(self.stub.ApplyRetention, pb.ApplyRetentionRequest(max_age_days=days))
        if isinstance(answer, pb.ApplyRetentionResponse) and answer.deleted_events:
            kept = {}
            for event_id, event in self.stored.items():
                if not isinstance(
                    self.call(self.stub.GetEvent, pb.GetEventRequest(id=event_id)), grpc.StatusCode
                ):
                    kept[event_id] = event
            self.stored = kept

    # Reads -------------------------------------------------------------------------------------------

    @invariant()
    def every_event_reads_back_as_stored(self) -> None:
        for event_id, stored in self.stored.items():
            got = self.call(self.stub.GetEvent, pb.GetEventRequest(id=event_id))
            assert isinstance(got, pb.GetEventResponse), got
            assert got.event == stored

    @rule(
        start=st.one_of(st.none(), timestamps()),
        end=st.one_of(st.none(), timestamps()),
        ascending=st.booleans(),
        search=st.one_of(st.just(""), texts(500)),
        page_size=st.integers(1, 3),
        data=st.data(),
    )
    def query_pages(
        self, start: object, end: object, ascending: bool, search: str, page_size: int, data: st.DataObject
    ) -> None:
        event_filter = pb.EventFilter(search=search)
        if start is not None:
            event_filter.from_time.CopyFrom(start)  # type: ignore[arg-type]
        if end is not None:
            event_filter.to_time.CopyFrom(end)  # type: ignore[arg-type]
        order = pb.SORT_ORDER_ASCENDING if ascending else pb.SORT_ORDER_DESCENDING
        request = pb.QueryEventsRequest(filter=event_filter, order=order, page_size=page_size)
        self.call(self.stub.CountEvents, pb.CountEventsRequest(filter=event_filter))
        seen: list[str] = []
        for _ in range(50):
            answer = self.call(self.stub.QueryEvents, request)
            if not isinstance(answer, pb.QueryEventsResponse):
                return
            for event in answer.events:
                assert event == self.stored[event.id]
                seen.append(event.id)
            if not answer.next_page_token:
                break
            token = answer.next_page_token
            self.call.refused_token(self.stub.QueryEvents, request, mutated_token(token, data), token)
            request.page_token = token
        assert len(seen) == len(set(seen)), "a page repeated an event"
        if start is None and end is None and not search:
            assert set(seen) == set(self.stored)

    @rule(session=SESSIONS, data=st.data())
    def timeline_pages(self, session: str, data: st.DataObject) -> None:
        request = pb.GetSessionTimelineRequest(session_id=session, page_size=2)
        seen = []
        while True:
            answer = self.call(self.stub.GetSessionTimeline, request)
            assert isinstance(answer, pb.GetSessionTimelineResponse), answer
            seen += [event.id for event in answer.events]
            for event in answer.events:
                assert event == self.stored[event.id]
            if not answer.next_page_token:
                break
            token = answer.next_page_token
            self.call.refused_token(self.stub.GetSessionTimeline, request, mutated_token(token, data), token)
            request.page_token = token
        assert sorted(seen) == sorted(e for e, event in self.stored.items() if event.session_id == session)
        self.call(self.stub.VerifySessionChain, pb.VerifySessionChainRequest(session_id=session))

    @rule(start=timestamps(), end=timestamps(), granularity=GRANULARITIES)
    def analytics(self, start: object, end: object, granularity: Any) -> None:
        request = pb.GetAnalyticsRequest(granularity=granularity)
        request.from_time.CopyFrom(start)  # type: ignore[arg-type]
        request.to_time.CopyFrom(end)  # type: ignore[arg-type]
        self.call(self.stub.GetAnalytics, request)

    @rule(start=timestamps(), end=timestamps(), data=st.data())
    def session_pages(self, start: object, end: object, data: st.DataObject) -> None:
        request = pb.QuerySessionsRequest(page_size=1)
        request.from_time.CopyFrom(start)  # type: ignore[arg-type]
        request.to_time.CopyFrom(end)  # type: ignore[arg-type]
        for _ in range(10):
            answer = self.call(self.stub.QuerySessions, request)
            if not isinstance(answer, pb.QuerySessionsResponse) or not answer.next_page_token:
                return
            token = answer.next_page_token
            self.call.refused_token(self.stub.QuerySessions, request, mutated_token(token, data), token)
            request.page_token = token

    @precondition(lambda self: bool(self.rule_ids))
    @rule(data=st.data())
    def listing_pages(self, data: st.DataObject) -> None:
        for method, request in (
            (self.stub.ListAlertRules, pb.ListAlertRulesRequest(page_size=1)),
            (self.stub.ListAlertHistory, pb.ListAlertHistoryRequest(page_size=1)),
            (self.stub.ListAgents, pb.ListAgentsRequest(page_size=1)),
        ):
            for _ in range(10):
                answer: Any = self.call(method, request)
                if isinstance(answer, grpc.StatusCode) or not answer.next_page_token:
                    break
                token = answer.next_page_token
                self.call.refused_token(method, request, mutated_token(token, data), token)
                request.page_token = token
        self.call(self.stub.GetStats, pb.GetStatsRequest())
        self.call(self.stub.GetAgent, pb.GetAgentRequest(id="agent"))


@pytest.mark.parametrize("backend", DATABASE_BACKENDS)
def test_event_store_fuzz(backend: str, daemons: Daemons) -> None:
    EventMachine.target = daemons.get(backend).target
    run_state_machine_as_test(EventMachine, settings=FUZZ_SETTINGS)

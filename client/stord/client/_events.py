"""EventStoreService for the blocking client; `_events_async.py` is its twin, method for method."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from stord.client import _events_codec as codec
from stord.client._events_codec import EventTypeName, Order, SeverityName, Time
from stord.client.errors import from_rpc_error
from stord.v1 import events_pb2 as pb
from stord.v1 import events_pb2_grpc

if TYPE_CHECKING:
    from stord.client._sync import _Caller

__all__ = ["EventTail", "Events"]


class EventTail:
    """A live TailEvents subscription: iterate to receive each delivery of new events; close to stop."""

    def __init__(self, call: Any) -> None:
        self._call = call
        try:
            next(call)  # the server's confirmation: events stored from now on are delivered
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def __iter__(self) -> Iterator[list[pb.Event]]:
        return self

    def __next__(self) -> list[pb.Event]:
        try:
            return list(next(self._call).events)
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise from_rpc_error(error) from None

    def close(self) -> None:
        """End the subscription."""
        self._call.cancel()

    def __enter__(self) -> EventTail:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Events:
    """EventStoreService: hash-chained agent events, sessions, agents, analytics, alerts. `Client.events`."""

    def __init__(self, channel: grpc.Channel, call: _Caller) -> None:
        self._stub = events_pb2_grpc.EventStoreServiceStub(channel)
        self._call = call

    def insert(self, events: Iterable[pb.Event]) -> pb.InsertEventsResponse:
        """Store a batch of 1 to 1000 events, all or nothing; the answer holds them as stored."""
        return self._call(self._stub.InsertEvents, pb.InsertEventsRequest(events=events))

    def get(self, event_id: str) -> pb.Event:
        """Return one event; NotFound when it is not stored."""
        return self._call(self._stub.GetEvent, pb.GetEventRequest(id=event_id)).event

    def query(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        event_types: Iterable[EventTypeName] = (),
        severities: Iterable[SeverityName] = (),
        from_time: Time | None = None,
        to_time: Time | None = None,
        search: str | None = None,
        order: Order | None = None,
        page_size: int = 0,
        offset: int = 0,
        page_token: str = "",
    ) -> pb.QueryEventsResponse:
        """Return one page of matching events (newest first by default) with the total and has_more."""
        event_filter = codec.event_filter(
            session_id=session_id,
            agent_id=agent_id,
            event_types=event_types,
            severities=severities,
            from_time=from_time,
            to_time=to_time,
            search=search,
        )
        request = pb.QueryEventsRequest(
            filter=event_filter,
            order=codec.sort_order(order),
            page_size=page_size,
            offset=offset,
            page_token=page_token,
        )
        return self._call(self._stub.QueryEvents, request)

    def count(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        event_types: Iterable[EventTypeName] = (),
        severities: Iterable[SeverityName] = (),
        from_time: Time | None = None,
        to_time: Time | None = None,
        search: str | None = None,
    ) -> int:
        """Return the number of matching events."""
        event_filter = codec.event_filter(
            session_id=session_id,
            agent_id=agent_id,
            event_types=event_types,
            severities=severities,
            from_time=from_time,
            to_time=to_time,
            search=search,
        )
        return self._call(self._stub.CountEvents, pb.CountEventsRequest(filter=event_filter)).count

    def timeline(self, session_id: str, *, page_size: int = 0) -> Iterator[pb.Event]:
        """Yield a session's events by ascending timestamp, fetching pages as needed."""
        token = ""
        while True:
            request = pb.GetSessionTimelineRequest(
                session_id=session_id, page_size=page_size, page_token=token
            )
            response = self._call(self._stub.GetSessionTimeline, request)
            yield from response.events
            token = response.next_page_token
            if not token:
                return

    def verify_chain(self, session_id: str) -> pb.VerifySessionChainResponse:
        """Recompute and check a session's stored hash chain."""
        return self._call(self._stub.VerifySessionChain, pb.VerifySessionChainRequest(session_id=session_id))

    def tail(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        event_types: Iterable[EventTypeName] = (),
        severities: Iterable[SeverityName] = (),
        from_time: Time | None = None,
        to_time: Time | None = None,
        search: str | None = None,
    ) -> EventTail:
        """Subscribe to new matching events; returns once the subscription is live. No deadline applies."""
        event_filter = codec.event_filter(
            session_id=session_id,
            agent_id=agent_id,
            event_types=event_types,
            severities=severities,
            from_time=from_time,
            to_time=to_time,
            search=search,
        )
        call = self._stub.TailEvents(pb.TailEventsRequest(filter=event_filter), metadata=self._call.metadata)
        return EventTail(call)

    def upsert_session(
        self,
        session_id: str,
        *,
        agent_id: str | None = None,
        agent_name: str | None = None,
        start_time: Time | None = None,
        end_time: Time | None = None,
        status: str | int | None = None,
        tags: Iterable[str] | None = None,
    ) -> pb.Session:
        """Create a session or write the fields given (at least one); return it as stored."""
        request = codec.session_update(
            session_id,
            agent_id=agent_id,
            agent_name=agent_name,
            start_time=start_time,
            end_time=end_time,
            status=status,
            tags=tags,
        )
        return self._call(self._stub.UpsertSession, request).session

    def get_session(self, session_id: str) -> pb.Session:
        """Return one session; NotFound when it does not exist."""
        return self._call(self._stub.GetSession, pb.GetSessionRequest(id=session_id)).session

    def query_sessions(
        self,
        *,
        agent_id: str | None = None,
        statuses: Iterable[str | int] = (),
        from_time: Time | None = None,
        to_time: Time | None = None,
        tags: Iterable[str] = (),
        page_size: int = 0,
        offset: int = 0,
        page_token: str = "",
    ) -> pb.QuerySessionsResponse:
        """Return one page of matching sessions, newest start first, with the total and has_more."""
        request = pb.QuerySessionsRequest(
            agent_id=agent_id or "",
            statuses=[codec.session_status(status) for status in statuses],
            from_time=None if from_time is None else codec.timestamp(from_time),
            to_time=None if to_time is None else codec.timestamp(to_time),
            tags=tags,
            page_size=page_size,
            offset=offset,
            page_token=page_token,
        )
        return self._call(self._stub.QuerySessions, request)

    def upsert_agent(
        self, agent_id: str, *, name: str | None = None, description: str | None = None
    ) -> pb.Agent:
        """Create an agent or write the name and description given (one at least); return it as stored."""
        return self._call(self._stub.UpsertAgent, codec.agent_update(agent_id, name, description)).agent

    def get_agent(self, agent_id: str) -> pb.Agent:
        """Return one agent; NotFound when it does not exist."""
        return self._call(self._stub.GetAgent, pb.GetAgentRequest(id=agent_id)).agent

    def agents(self, *, page_size: int = 0) -> Iterator[pb.Agent]:
        """Yield every agent by id, fetching pages as needed."""
        token = ""
        while True:
            response = self._call(
                self._stub.ListAgents, pb.ListAgentsRequest(page_size=page_size, page_token=token)
            )
            yield from response.agents
            token = response.next_page_token
            if not token:
                return

    def analytics(
        self, *, from_time: Time, to_time: Time, granularity: str = "hour", agent_id: str | None = None
    ) -> pb.GetAnalyticsResponse:
        """Return the range's buckets (`hour`, `day` or `week`) and totals."""
        request = pb.GetAnalyticsRequest(
            from_time=codec.timestamp(from_time),
            to_time=codec.timestamp(to_time),
            agent_id=agent_id or "",
            granularity=codec.granularity_number(granularity),
        )
        return self._call(self._stub.GetAnalytics, request)

    def create_alert_rule(self, rule: pb.AlertRule) -> pb.AlertRule:
        """Store a new alert rule (the server makes an id when it has none); return it as stored."""
        return self._call(self._stub.CreateAlertRule, pb.CreateAlertRuleRequest(rule=rule)).rule

    def get_alert_rule(self, rule_id: str) -> pb.AlertRule:
        """Return one alert rule; NotFound when it does not exist."""
        return self._call(self._stub.GetAlertRule, pb.GetAlertRuleRequest(id=rule_id)).rule

    def update_alert_rule(self, rule: pb.AlertRule, *, fields: Iterable[str] = ()) -> pb.AlertRule:
        """Write the named fields of `rule` (all writable ones when none are named); return it as stored."""
        request = pb.UpdateAlertRuleRequest(rule=rule, update_mask=codec.mask(fields))
        return self._call(self._stub.UpdateAlertRule, request).rule

    def delete_alert_rule(self, rule_id: str) -> None:
        """Remove an alert rule, keeping its history; NotFound when it does not exist."""
        self._call(self._stub.DeleteAlertRule, pb.DeleteAlertRuleRequest(id=rule_id))

    def alert_rules(self, *, page_size: int = 0) -> Iterator[pb.AlertRule]:
        """Yield every alert rule by id, fetching pages as needed."""
        token = ""
        while True:
            request = pb.ListAlertRulesRequest(page_size=page_size, page_token=token)
            response = self._call(self._stub.ListAlertRules, request)
            yield from response.rules
            token = response.next_page_token
            if not token:
                return

    def record_alert(self, entry: pb.AlertHistoryEntry) -> pb.AlertHistoryEntry:
        """Add an entry to a rule's alert history; return it as stored."""
        return self._call(self._stub.RecordAlert, pb.RecordAlertRequest(entry=entry)).entry

    def alert_history(
        self, *, rule_id: str | None = None, page_size: int = 0, offset: int = 0, page_token: str = ""
    ) -> pb.ListAlertHistoryResponse:
        """Return one page of alert history, newest first, with the total and has_more."""
        request = pb.ListAlertHistoryRequest(
            rule_id=rule_id or "", page_size=page_size, offset=offset, page_token=page_token
        )
        return self._call(self._stub.ListAlertHistory, request)

    def apply_retention(self, max_age_days: int) -> pb.ApplyRetentionResponse:
        """Delete events older than `max_age_days` days, then sessions left without events."""
        return self._call(self._stub.ApplyRetention, pb.ApplyRetentionRequest(max_age_days=max_age_days))

    def stats(self) -> pb.GetStatsResponse:
        """Return what this client's namespace holds."""
        return self._call(self._stub.GetStats, pb.GetStatsRequest())

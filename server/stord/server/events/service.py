"""EventStoreService (DESIGN 4.4) over the EventStore port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from stord.server.events import codec
from stord.server.events.model import new_ulid
from stord.server.events.port import (
    ALERT_RULE_FIELDS,
    AlertHistoryEntry,
    AlertRule,
    AnalyticsFigures,
    AnalyticsQuery,
    EventAgent,
    EventAgentUpdate,
    EventFilter,
    EventInput,
    EventQuery,
    EventStore,
    InsertOutcome,
    SessionQuery,
    SessionStatus,
    SessionUpdate,
)
from stord.server.events.tail import EventHub, SubscriberDropped
from stord.server.ports import FailedPrecondition, InvalidArgument, NotFound, StoreError
from stord.server.rpc import calls
from stord.server.rpc import validate as check
from stord.server.rpc.page_tokens import PageTokens
from stord.v1 import events_pb2 as pb
from stord.v1 import events_pb2_grpc

__all__ = ["EventStoreServicer"]

_Identified = TypeVar("_Identified", EventAgent, AlertRule)
"""What an id-ordered listing holds."""

Context = grpc.aio.ServicerContext[Any, Any]

QUERY_PAGE = (50, 500)
"""Default and largest page of QueryEvents, QuerySessions and ListAlertHistory (the original's limit)."""
LIST_PAGE = (100, 1000)
"""Default and largest page of ListAgents and ListAlertRules."""
TIMELINE_PAGE = (1000, 1000)
MAX_RETENTION_DAYS = 36_500
MAX_WINDOW_MINUTES = 525_600
MAX_CHANNELS = 100
DAY_MS = 86_400_000
_PREPARED_AHEAD = 2
"""Batches of one IngestEvents stream decoded while an earlier one commits: CPU overlaps the disk."""

_SESSION_FIELDS = {
    "agent_id": "agent_id",
    "agent_name": "agent_name",
    "start_time": "started_at",
    "end_time": "ended_at",
    "status": "status",
    "tags": "tags",
}
_AGENT_FIELDS = frozenset({"name", "description"})


def _or_now(milliseconds: int | None, now: int) -> int:
    """Return a time that was given, else now (the epoch's first millisecond is a time that was given)."""
    return now if milliseconds is None else milliseconds


def _offset(offset: int, page_token: str) -> int:
    if offset < 0:
        raise InvalidArgument("offset", "must not be negative")
    if offset and page_token:
        raise InvalidArgument("offset", "cannot be combined with page_token")
    return offset


def _figures(figures: AnalyticsFigures) -> dict[str, Any]:
    return {
        "event_count": figures.event_count,
        "tool_call_count": figures.tool_call_count,
        "error_count": figures.error_count,
        "avg_latency_ms": figures.avg_latency_ms,
        "total_cost_usd": figures.total_cost_usd,
        "unique_sessions": figures.unique_sessions,
    }


def _in_batch(error: StoreError, sequence: int) -> StoreError:
    """Return the error of a stream's batch, saying which batch it was."""
    if isinstance(error, InvalidArgument):
        return InvalidArgument(error.field, f"{str(error).partition(': ')[2]} (batch sequence {sequence})")
    if isinstance(error, FailedPrecondition):
        return FailedPrecondition(f"batch sequence {sequence}: {error}")
    return error


class EventStoreServicer(events_pb2_grpc.EventStoreServiceServicer):
    """Validates and translates; the store decides chains, sessions and agents in its transactions."""

    def __init__(
        self,
        store: EventStore,
        tokens: PageTokens,
        hub: EventHub | None = None,
        *,
        count_stored: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._hub = hub or EventHub(store)
        self._tokens = tokens
        self._count_stored = count_stored
        """Told how many events each committed batch stored (the metrics' ingest counter)."""

    def _now(self) -> int:
        return int(self._store.clock() * 1000)

    def _prepare(self, messages: Sequence[pb.Event], field: str = "events") -> tuple[list[EventInput], int]:
        """Return a batch's events, each id once (the first wins), and how many repeats were dropped."""
        check.batch(messages, field)
        now = self._now()
        events: list[EventInput] = []
        seen: set[str] = set()
        for index, message in enumerate(messages):
            event = codec.event_input(message, f"{field}[{index}]", now)
            if event.id not in seen:
                seen.add(event.id)
                events.append(event)
        return events, len(messages) - len(events)

    async def _insert(self, namespace: str, events: list[EventInput]) -> InsertOutcome:
        outcome = await self._store.insert_events(namespace, events)
        if self._count_stored is not None:
            self._count_stored(len(outcome.stored))
        self._hub.committed(namespace, outcome)
        return outcome

    async def InsertEvents(
        self, request: pb.InsertEventsRequest, context: Context
    ) -> pb.InsertEventsResponse:
        events, repeats = self._prepare(request.events)
        outcome = await self._insert(calls.namespace(), events)
        return pb.InsertEventsResponse(
            accepted=len(outcome.stored),
            duplicates=outcome.duplicates + repeats,
            events=[codec.event_message(event) for event in outcome.stored],
        )

    async def IngestEvents(
        self, request_iterator: AsyncIterator[pb.IngestEventsRequest], context: Context
    ) -> AsyncIterator[pb.IngestEventsResponse]:
        namespace = calls.namespace()
        prepared: asyncio.Queue[tuple[int, list[EventInput], int] | Exception | None] = asyncio.Queue(
            _PREPARED_AHEAD
        )

        async def decode() -> None:
            try:
                async for request in request_iterator:
                    try:
                        events, repeats = self._prepare(request.events)
                    except StoreError as error:
                        raise _in_batch(error, request.sequence) from None
                    await prepared.put((request.sequence, events, repeats))
            except Exception as error:  # delivered in order, after the batches decoded before it
                await prepared.put(error)
            else:
                await prepared.put(None)

        decoder = asyncio.create_task(decode(), name="stord-ingest-decoder")
        try:
            while (item := await prepared.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                sequence, events, repeats = item
                try:
                    outcome = await self._insert(namespace, events)
                except StoreError as error:
                    raise _in_batch(error, sequence) from None
                yield pb.IngestEventsResponse(
                    sequence=sequence, accepted=len(outcome.stored), duplicates=outcome.duplicates + repeats
                )
            await decoder
        finally:
            decoder.cancel()

    async def GetEvent(self, request: pb.GetEventRequest, context: Context) -> pb.GetEventResponse:
        event_id = check.identifier(request.id, "id")
        event = await self._store.get_event(calls.namespace(), event_id)
        if event is None:
            raise NotFound(f"event {event_id} does not exist")
        return pb.GetEventResponse(event=codec.event_message(event))

    async def QueryEvents(self, request: pb.QueryEventsRequest, context: Context) -> pb.QueryEventsResponse:
        if request.HasField("order") and request.order not in (
            pb.SORT_ORDER_ASCENDING,
            pb.SORT_ORDER_DESCENDING,
        ):
            raise InvalidArgument("order", "must be SORT_ORDER_ASCENDING or SORT_ORDER_DESCENDING")
        descending = request.order != pb.SORT_ORDER_ASCENDING
        limit = check.page_size(request.page_size, limits=QUERY_PAGE)
        query = EventQuery(
            filter=codec.event_filter(request.filter),
            descending=descending,
            limit=limit + 1,  # one more tells whether another page follows
            offset=_offset(request.offset, request.page_token),
            after=codec.event_position(self._tokens, request),
        )
        page = await self._store.query_events(calls.namespace(), query)
        events = page.events[:limit]
        has_more = len(page.events) > limit
        return pb.QueryEventsResponse(
            events=[codec.event_message(event) for event in events],
            total=page.total,
            has_more=has_more,
            next_page_token=codec.event_position_token(self._tokens, request, events[-1]) if has_more else "",
        )

    async def CountEvents(self, request: pb.CountEventsRequest, context: Context) -> pb.CountEventsResponse:
        count = await self._store.count_events(calls.namespace(), codec.event_filter(request.filter))
        return pb.CountEventsResponse(count=count)

    async def GetSessionTimeline(
        self, request: pb.GetSessionTimelineRequest, context: Context
    ) -> pb.GetSessionTimelineResponse:
        session_id = check.identifier(request.session_id, "session_id")
        limit = check.page_size(request.page_size, limits=TIMELINE_PAGE)
        events = await self._store.session_timeline(
            calls.namespace(),
            session_id,
            after=codec.event_position(self._tokens, request),
            limit=limit + 1,
        )
        page = events[:limit]
        return pb.GetSessionTimelineResponse(
            events=[codec.event_message(event) for event in page],
            next_page_token=codec.event_position_token(self._tokens, request, page[-1])
            if len(events) > limit
            else "",
        )

    async def VerifySessionChain(
        self, request: pb.VerifySessionChainRequest, context: Context
    ) -> pb.VerifySessionChainResponse:
        session_id = check.identifier(request.session_id, "session_id")
        result = await self._store.verify_chain(calls.namespace(), session_id)
        if result is None:
            raise NotFound(f"session {session_id} does not exist")
        return pb.VerifySessionChainResponse(
            valid=result.valid,
            checked_events=result.checked_events,
            first_chain_index=result.first_chain_index,
            broken_event_id=result.broken_event_id or "",
            reason=result.reason or "",
        )

    async def TailEvents(
        self, request: pb.TailEventsRequest, context: Context
    ) -> AsyncIterator[pb.TailEventsResponse]:
        event_filter = codec.event_filter(request.filter) if request.HasField("filter") else EventFilter()
        async with self._hub.subscribe(calls.namespace(), event_filter) as subscription:
            yield pb.TailEventsResponse()  # the subscription is live from here on
            while True:
                try:
                    events = await subscription.next_events()
                except SubscriberDropped as error:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{error}; query what was missed, then subscribe again",
                    )
                yield pb.TailEventsResponse(events=[codec.event_message(event) for event in events])

    async def drain(self) -> None:
        """End every open TailEvents stream with UNAVAILABLE: the daemon is shutting down."""
        await self._hub.close()

    # Sessions and agents ---------------------------------------------------------------------------

    async def UpsertSession(
        self, request: pb.UpsertSessionRequest, context: Context
    ) -> pb.UpsertSessionResponse:
        message = request.session
        written = codec.update_mask(request.update_mask, _SESSION_FIELDS)
        now = self._now()
        update = SessionUpdate(
            id=check.identifier(message.id, "session.id"),
            written=frozenset(_SESSION_FIELDS[name] for name in written),
            agent_id=check.identifier(message.agent_id, "session.agent_id") if "agent_id" in written else "",
            agent_name=check.text(message.agent_name, "session.agent_name", check.MAX_ID_BYTES) or None,
            started_at=_or_now(codec.optional_milliseconds(message, "start_time", "session.start_time"), now),
            ended_at=codec.optional_milliseconds(message, "end_time", "session.end_time"),
            status=codec.session_status(message.status, "session.status")
            if "status" in written
            else SessionStatus.ACTIVE,
            tags=codec.tags(message.tags, "session.tags"),
        )
        session = await self._store.upsert_session(calls.namespace(), update)
        return pb.UpsertSessionResponse(session=codec.session_message(session))

    async def GetSession(self, request: pb.GetSessionRequest, context: Context) -> pb.GetSessionResponse:
        session_id = check.identifier(request.id, "id")
        session = await self._store.get_session(calls.namespace(), session_id)
        if session is None:
            raise NotFound(f"session {session_id} does not exist")
        return pb.GetSessionResponse(session=codec.session_message(session))

    async def QuerySessions(
        self, request: pb.QuerySessionsRequest, context: Context
    ) -> pb.QuerySessionsResponse:
        limit = check.page_size(request.page_size, limits=QUERY_PAGE)
        offset = _offset(request.offset, request.page_token) or codec.offset_token(self._tokens, request)
        query = SessionQuery(
            agent_id=codec.optional_identifier(request.agent_id, "agent_id"),
            statuses=frozenset(
                codec.session_status(number, f"statuses[{index}]")
                for index, number in enumerate(request.statuses)
            ),
            from_time=codec.optional_milliseconds(request, "from_time", "from_time"),
            to_time=codec.optional_milliseconds(request, "to_time", "to_time"),
            tags=frozenset(codec.tags(request.tags, "tags")),
            limit=limit,
            offset=offset,
        )
        page = await self._store.query_sessions(calls.namespace(), query)
        has_more = offset + len(page.sessions) < page.total
        return pb.QuerySessionsResponse(
            sessions=[codec.session_message(session) for session in page.sessions],
            total=page.total,
            has_more=has_more,
            next_page_token=codec.offset_page_token(self._tokens, request, offset + len(page.sessions))
            if has_more
            else "",
        )

    async def UpsertAgent(self, request: pb.UpsertAgentRequest, context: Context) -> pb.UpsertAgentResponse:
        message = request.agent
        written = codec.update_mask(request.update_mask, _AGENT_FIELDS)
        agent_id = check.identifier(message.id, "agent.id")
        name = check.text(message.name, "agent.name", check.MAX_ID_BYTES)
        if "name" in written and not name:
            raise InvalidArgument("agent.name", "must not be empty")
        update = EventAgentUpdate(
            id=agent_id,
            written=written,
            name=name or agent_id,
            description=check.text(message.description, "agent.description", codec.MAX_MESSAGE_BYTES) or None,
            now=self._now(),
        )
        agent = await self._store.upsert_agent(calls.namespace(), update)
        return pb.UpsertAgentResponse(agent=codec.agent_message(agent))

    async def _id_page(
        self, request: Any, page_size: int, read: Callable[..., Awaitable[list[_Identified]]]
    ) -> tuple[list[_Identified], str]:
        """Read one page of an id-ordered listing (agents, alert rules) and the token of the next, if any."""
        limit = check.page_size(page_size, limits=LIST_PAGE)
        found = await read(calls.namespace(), after=codec.id_token(self._tokens, request), limit=limit + 1)
        page = found[:limit]
        more = len(found) > limit
        return page, codec.id_page_token(self._tokens, request, page[-1].id) if more else ""

    async def GetAgent(self, request: pb.GetAgentRequest, context: Context) -> pb.GetAgentResponse:
        agent_id = check.identifier(request.id, "id")
        agent = await self._store.get_agent(calls.namespace(), agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id} does not exist")
        return pb.GetAgentResponse(agent=codec.agent_message(agent))

    async def ListAgents(self, request: pb.ListAgentsRequest, context: Context) -> pb.ListAgentsResponse:
        page, next_page_token = await self._id_page(request, request.page_size, self._store.list_agents)
        return pb.ListAgentsResponse(
            agents=[codec.agent_message(agent) for agent in page], next_page_token=next_page_token
        )

    # Analytics, retention, stats -------------------------------------------------------------------

    async def GetAnalytics(
        self, request: pb.GetAnalyticsRequest, context: Context
    ) -> pb.GetAnalyticsResponse:
        from_time = codec.optional_milliseconds(request, "from_time", "from_time")
        to_time = codec.optional_milliseconds(request, "to_time", "to_time")
        if from_time is None:
            raise InvalidArgument("from_time", "is required")
        if to_time is None:
            raise InvalidArgument("to_time", "is required")
        if to_time < from_time:
            raise InvalidArgument("to_time", "must not be before from_time")
        query = AnalyticsQuery(
            from_time=from_time,
            to_time=to_time,
            agent_id=codec.optional_identifier(request.agent_id, "agent_id"),
            granularity=codec.member(request.granularity, codec.GRANULARITIES, "granularity", pb.Granularity),
        )
        analytics = await self._store.analytics(calls.namespace(), query)
        return pb.GetAnalyticsResponse(
            buckets=[
                pb.AnalyticsBucket(start_time=check.timestamp_from_milliseconds(start), **_figures(figures))
                for start, figures in analytics.buckets
            ],
            totals=pb.AnalyticsTotals(unique_agents=analytics.unique_agents, **_figures(analytics.totals)),
        )

    async def ApplyRetention(
        self, request: pb.ApplyRetentionRequest, context: Context
    ) -> pb.ApplyRetentionResponse:
        if not 1 <= request.max_age_days <= MAX_RETENTION_DAYS:
            raise InvalidArgument("max_age_days", f"must be between 1 and {MAX_RETENTION_DAYS}")
        cutoff = self._now() - request.max_age_days * DAY_MS
        outcome = await self._store.apply_retention(calls.namespace(), cutoff)
        return pb.ApplyRetentionResponse(
            deleted_events=outcome.deleted_events,
            deleted_sessions=outcome.deleted_sessions,
            cutoff_time=check.timestamp_from_milliseconds(cutoff),
        )

    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        stats = await self._store.stats(calls.namespace())
        response = pb.GetStatsResponse(
            total_events=stats.total_events,
            total_sessions=stats.total_sessions,
            total_agents=stats.total_agents,
            storage_size_bytes=stats.storage_size_bytes,
        )
        if stats.oldest_event_at is not None:
            response.oldest_event_time.CopyFrom(check.timestamp_from_milliseconds(stats.oldest_event_at))
        if stats.newest_event_at is not None:
            response.newest_event_time.CopyFrom(check.timestamp_from_milliseconds(stats.newest_event_at))
        return response

    # Alert rules and history -----------------------------------------------------------------------

    def _alert_rule(
        self, message: pb.AlertRule, written: frozenset[str], rule_id: str, now: int
    ) -> AlertRule:
        """Return the rule a message describes, validating the fields in `written` (the others are unused)."""
        scope_tags = codec.tags(message.scope.tags, "rule.scope.tags")
        channels = tuple(
            check.text(channel, f"rule.notify_channels[{index}]", codec.MAX_CHANNEL_BYTES)
            for index, channel in enumerate(message.notify_channels)
        )
        if len(channels) > MAX_CHANNELS:
            raise InvalidArgument("rule.notify_channels", f"must hold at most {MAX_CHANNELS} channels")
        if "name" in written and not message.name:
            raise InvalidArgument("rule.name", "must not be empty")
        if "window_minutes" in written and not 1 <= message.window_minutes <= MAX_WINDOW_MINUTES:
            raise InvalidArgument("rule.window_minutes", f"must be between 1 and {MAX_WINDOW_MINUTES}")
        return AlertRule(
            id=rule_id,
            name=check.text(message.name, "rule.name", check.MAX_ID_BYTES),
            enabled=message.enabled,
            condition=codec.member(
                message.condition, codec.ALERT_CONDITIONS, "rule.condition", pb.AlertCondition
            )
            if "condition" in written
            else next(iter(codec.ALERT_CONDITIONS.values())),
            threshold=check.finite(message.threshold, "rule.threshold"),
            window_minutes=message.window_minutes,
            scope_agent_id=codec.optional_identifier(message.scope.agent_id, "rule.scope.agent_id"),
            scope_tags=scope_tags,
            notify_channels=channels,
            created_at=now,
            updated_at=now,
        )

    async def CreateAlertRule(
        self, request: pb.CreateAlertRuleRequest, context: Context
    ) -> pb.CreateAlertRuleResponse:
        now = self._now()
        message = request.rule
        rule_id = check.identifier(message.id, "rule.id") if message.id else new_ulid(now)
        rule = self._alert_rule(message, ALERT_RULE_FIELDS, rule_id, now)
        await self._store.create_alert_rule(calls.namespace(), rule)
        return pb.CreateAlertRuleResponse(rule=codec.alert_rule_message(rule))

    async def GetAlertRule(
        self, request: pb.GetAlertRuleRequest, context: Context
    ) -> pb.GetAlertRuleResponse:
        rule_id = check.identifier(request.id, "id")
        rule = await self._store.get_alert_rule(calls.namespace(), rule_id)
        if rule is None:
            raise NotFound(f"alert rule {rule_id} does not exist")
        return pb.GetAlertRuleResponse(rule=codec.alert_rule_message(rule))

    async def UpdateAlertRule(
        self, request: pb.UpdateAlertRuleRequest, context: Context
    ) -> pb.UpdateAlertRuleResponse:
        written = codec.update_mask(request.update_mask, ALERT_RULE_FIELDS)
        rule_id = check.identifier(request.rule.id, "rule.id")
        rule = self._alert_rule(request.rule, written, rule_id, self._now())
        updated = await self._store.update_alert_rule(calls.namespace(), rule, written)
        return pb.UpdateAlertRuleResponse(rule=codec.alert_rule_message(updated))

    async def DeleteAlertRule(
        self, request: pb.DeleteAlertRuleRequest, context: Context
    ) -> pb.DeleteAlertRuleResponse:
        rule_id = check.identifier(request.id, "id")
        if not await self._store.delete_alert_rule(calls.namespace(), rule_id):
            raise NotFound(f"alert rule {rule_id} does not exist")
        return pb.DeleteAlertRuleResponse()

    async def ListAlertRules(
        self, request: pb.ListAlertRulesRequest, context: Context
    ) -> pb.ListAlertRulesResponse:
        page, next_page_token = await self._id_page(request, request.page_size, self._store.list_alert_rules)
        return pb.ListAlertRulesResponse(
            rules=[codec.alert_rule_message(rule) for rule in page], next_page_token=next_page_token
        )

    async def RecordAlert(self, request: pb.RecordAlertRequest, context: Context) -> pb.RecordAlertResponse:
        message = request.entry
        now = self._now()
        entry = AlertHistoryEntry(
            id=check.identifier(message.id, "entry.id") if message.id else new_ulid(now),
            rule_id=check.identifier(message.rule_id, "entry.rule_id"),
            triggered_at=_or_now(
                codec.optional_milliseconds(message, "triggered_time", "entry.triggered_time"), now
            ),
            resolved_at=codec.optional_milliseconds(message, "resolved_time", "entry.resolved_time"),
            current_value=check.finite(message.current_value, "entry.current_value"),
            threshold=check.finite(message.threshold, "entry.threshold"),
            message=check.text(message.message, "entry.message", codec.MAX_MESSAGE_BYTES),
        )
        await self._store.record_alert(calls.namespace(), entry)
        return pb.RecordAlertResponse(entry=codec.alert_entry_message(entry))

    async def ListAlertHistory(
        self, request: pb.ListAlertHistoryRequest, context: Context
    ) -> pb.ListAlertHistoryResponse:
        limit = check.page_size(request.page_size, limits=QUERY_PAGE)
        offset = _offset(request.offset, request.page_token) or codec.offset_token(self._tokens, request)
        page = await self._store.list_alert_history(
            calls.namespace(),
            rule_id=codec.optional_identifier(request.rule_id, "rule_id"),
            offset=offset,
            limit=limit,
        )
        has_more = offset + len(page.entries) < page.total
        return pb.ListAlertHistoryResponse(
            entries=[codec.alert_entry_message(entry) for entry in page.entries],
            total=page.total,
            has_more=has_more,
            next_page_token=codec.offset_page_token(self._tokens, request, offset + len(page.entries))
            if has_more
            else "",
        )

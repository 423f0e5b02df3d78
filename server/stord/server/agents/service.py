"""AgentStoreService (DESIGN 4.5) over the AgentStore port, reading through the cache when there is one."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.struct_pb2 import Struct

from stord.server.agents.port import AgentStatus, AgentStore, AgentVisibility, StoredAgent
from stord.server.metrics import Metrics
from stord.server.ports import Backend, InvalidArgument, NotFound
from stord.server.read_cache import CachedAgentStore, read_cache_for
from stord.server.rpc import calls, message_json
from stord.server.rpc import validate as check
from stord.server.rpc.page_tokens import PageTokens
from stord.v1 import agents_pb2 as pb
from stord.v1 import agents_pb2_grpc

__all__ = ["AgentStoreServicer", "agent_store_servicer"]

Context = grpc.aio.ServicerContext[Any, Any]

MAX_QUERY_BYTES = 1024

_STATUSES = {
    pb.STORED_AGENT_STATUS_ACTIVE: AgentStatus.ACTIVE,
    pb.STORED_AGENT_STATUS_INACTIVE: AgentStatus.INACTIVE,
}
_VISIBILITIES = {
    pb.STORED_AGENT_VISIBILITY_PUBLIC: AgentVisibility.PUBLIC,
    pb.STORED_AGENT_VISIBILITY_PRIVATE: AgentVisibility.PRIVATE,
}
_STATUS_VALUES = {domain: value for value, domain in _STATUSES.items()}
_VISIBILITY_VALUES = {domain: value for value, domain in _VISIBILITIES.items()}


def agent_store_servicer(
    database: Backend, cache: Backend, metrics: Metrics | None, tokens: PageTokens
) -> AgentStoreServicer:
    """Serve the database's agents, through the cache role's store when that is shared (`read_cache_for`)."""
    store = database.agents()
    meter = None if metrics is None else lambda: metrics.read_cache("agents")
    read_cache = read_cache_for(database, cache, meter)
    return AgentStoreServicer(store if read_cache is None else CachedAgentStore(store, read_cache), tokens)


def _agent_from_proto(agent: pb.StoredAgent, owner: str) -> StoredAgent:
    """Return the agent a SetAgent writes, owned by the caller; its update_time is the store's to set."""
    status = _STATUSES.get(agent.status)
    if status is None:
        raise InvalidArgument("agent.status", "must be STORED_AGENT_STATUS_ACTIVE or _INACTIVE")
    visibility = _VISIBILITIES.get(agent.visibility)
    if visibility is None:
        raise InvalidArgument("agent.visibility", "must be STORED_AGENT_VISIBILITY_PUBLIC or _PRIVATE")
    if visibility is AgentVisibility.PRIVATE and not owner:
        raise InvalidArgument(
            "agent.visibility", "a PRIVATE agent needs an owner: call with the stord-principal metadata"
        )
    configuration = None
    if agent.HasField("configuration"):
        configuration = message_json.to_document(agent.configuration, "agent.configuration")
    return StoredAgent(
        uri=check.key(agent.uri, "agent.uri"),
        name=check.text(agent.name, "agent.name"),
        version=check.text(agent.version, "agent.version"),
        status=status,
        visibility=visibility,
        owner=owner,
        configuration=configuration,
    )


def _agent_to_proto(agent: StoredAgent) -> pb.StoredAgent:
    message = pb.StoredAgent(
        uri=agent.uri,
        name=agent.name,
        version=agent.version,
        update_time=check.timestamp_from_seconds(agent.update_time),
        status=_STATUS_VALUES[agent.status],
        visibility=_VISIBILITY_VALUES[agent.visibility],
        owner=agent.owner,
    )
    if agent.configuration is not None:
        message.configuration.CopyFrom(message_json.from_document(agent.configuration, Struct()))
    return message


def _query(query: str) -> str:
    return check.text(query, "query", MAX_QUERY_BYTES)


class AgentStoreServicer(agents_pb2_grpc.AgentStoreServiceServicer):
    """Agents by uri, owned by the caller's principal and visible by their visibility."""

    def __init__(self, store: AgentStore, tokens: PageTokens) -> None:
        self._store = store
        self._tokens = tokens

    async def GetAgent(
        self, request: pb.AgentStoreServiceGetAgentRequest, context: Context
    ) -> pb.AgentStoreServiceGetAgentResponse:
        uri = check.key(request.uri, "uri")
        agent = await self._store.get(calls.namespace(), uri)
        # Someone else's PRIVATE agent is reported missing, not forbidden: its existence is private too.
        if agent is None or not agent.visible_to(calls.principal()):
            raise NotFound(f"no agent {uri!r}")
        return pb.AgentStoreServiceGetAgentResponse(agent=_agent_to_proto(agent))

    async def SetAgent(
        self, request: pb.AgentStoreServiceSetAgentRequest, context: Context
    ) -> pb.AgentStoreServiceSetAgentResponse:
        if not request.HasField("agent"):
            raise InvalidArgument("agent", "is required")
        written = await self._store.set(
            calls.namespace(), _agent_from_proto(request.agent, calls.principal())
        )
        return pb.AgentStoreServiceSetAgentResponse(
            agent=_agent_to_proto(written.agent), created=written.created
        )

    async def DeleteAgent(
        self, request: pb.AgentStoreServiceDeleteAgentRequest, context: Context
    ) -> pb.AgentStoreServiceDeleteAgentResponse:
        uri = check.key(request.uri, "uri")
        deleted = await self._store.delete(calls.namespace(), uri, principal=calls.principal())
        return pb.AgentStoreServiceDeleteAgentResponse(deleted=deleted)

    async def SearchAgents(
        self, request: pb.AgentStoreServiceSearchAgentsRequest, context: Context
    ) -> pb.AgentStoreServiceSearchAgentsResponse:
        query, limit = _query(request.query), check.page_size(request.page_size)
        position = self._tokens.resume(request, calls.namespace(), int)
        after = None if position is None else int(position[0])
        # One extra match tells whether another page follows, so the last page never has an empty successor.
        matches = await self._store.search(
            calls.namespace(), query, principal=calls.principal(), after=after, limit=limit + 1
        )
        token = ""
        if len(matches) > limit:
            matches = matches[:limit]
            token = self._tokens.issue(request, calls.namespace(), matches[-1].position)
        agents = [_agent_to_proto(match.agent) for match in matches]
        return pb.AgentStoreServiceSearchAgentsResponse(agents=agents, next_page_token=token)

"""AgentStoreService: `Client.agents` and its asyncio twin `AsyncClient.agents`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import grpc
from google.protobuf import json_format

from stord.client import _codec
from stord.client.errors import NotFound
from stord.v1 import agents_pb2, agents_pb2_grpc

if TYPE_CHECKING:
    from stord.client import _async, _sync

__all__ = ["Agents", "AsyncAgents", "Status", "Visibility", "agent_configuration"]

Status = Literal["active", "inactive"]
Visibility = Literal["public", "private"]

_STATUSES: dict[Status, agents_pb2.StoredAgentStatus.ValueType] = {
    "active": agents_pb2.STORED_AGENT_STATUS_ACTIVE,
    "inactive": agents_pb2.STORED_AGENT_STATUS_INACTIVE,
}
_VISIBILITIES: dict[Visibility, agents_pb2.StoredAgentVisibility.ValueType] = {
    "public": agents_pb2.STORED_AGENT_VISIBILITY_PUBLIC,
    "private": agents_pb2.STORED_AGENT_VISIBILITY_PRIVATE,
}


def _set_request(
    uri: str,
    name: str,
    version: str,
    status: Status,
    visibility: Visibility,
    configuration: Mapping[str, Any] | None,
) -> agents_pb2.AgentStoreServiceSetAgentRequest:
    agent = agents_pb2.StoredAgent(
        uri=uri,
        name=name,
        version=version,
        status=_codec.choice(status, _STATUSES, "status"),
        visibility=_codec.choice(visibility, _VISIBILITIES, "visibility"),
    )
    if configuration is not None:
        agent.configuration.SetInParent()  # an empty configuration is one, unlike none
        agent.configuration.update(configuration)
    return agents_pb2.AgentStoreServiceSetAgentRequest(agent=agent)


def agent_configuration(agent: agents_pb2.StoredAgent) -> dict[str, Any] | None:
    """Return an agent's configuration as a JSON object, None when it has none."""
    if not agent.HasField("configuration"):
        return None
    return json_format.MessageToDict(agent.configuration)


class Agents:
    """Agent definitions by uri, owned by the client's `principal`. Reached as `Client.agents`."""

    def __init__(self, channel: grpc.Channel, call: _sync._Caller) -> None:
        self._stub = agents_pb2_grpc.AgentStoreServiceStub(channel)
        self._call = call

    def get(self, uri: str) -> agents_pb2.StoredAgent | None:
        """Return the agent, None when there is none this client may see."""
        try:
            response = self._call(self._stub.GetAgent, agents_pb2.AgentStoreServiceGetAgentRequest(uri=uri))
        except NotFound:
            return None
        return response.agent

    def set(
        self,
        uri: str,
        *,
        name: str = "",
        version: str = "",
        status: Status = "active",
        visibility: Visibility = "public",
        configuration: Mapping[str, Any] | None = None,
    ) -> agents_pb2.AgentStoreServiceSetAgentResponse:
        """Create or replace an agent; the answer holds the agent as stored and whether it was created."""
        request = _set_request(uri, name, version, status, visibility, configuration)
        return self._call(self._stub.SetAgent, request)

    def delete(self, uri: str) -> bool:
        """Remove an agent; return whether there was one."""
        request = agents_pb2.AgentStoreServiceDeleteAgentRequest(uri=uri)
        return self._call(self._stub.DeleteAgent, request).deleted

    def search(self, query: str = "", *, page_size: int = 0) -> Iterator[agents_pb2.StoredAgent]:
        """Yield the visible agents whose uri is `query` or whose name or configuration contains it."""
        token = ""
        while True:
            request = agents_pb2.AgentStoreServiceSearchAgentsRequest(
                query=query, page_size=page_size, page_token=token
            )
            response = self._call(self._stub.SearchAgents, request)
            yield from response.agents
            token = response.next_page_token
            if not token:
                return


class AsyncAgents:
    """Agent definitions by uri, owned by the client's `principal`. Reached as `AsyncClient.agents`."""

    def __init__(self, channel: grpc.aio.Channel, call: _async._Caller) -> None:
        self._stub = agents_pb2_grpc.AgentStoreServiceStub(channel)
        self._call = call

    async def get(self, uri: str) -> agents_pb2.StoredAgent | None:
        """Return the agent, None when there is none this client may see."""
        request = agents_pb2.AgentStoreServiceGetAgentRequest(uri=uri)
        try:
            response = await self._call(self._stub.GetAgent, request)
        except NotFound:
            return None
        return response.agent

    async def set(
        self,
        uri: str,
        *,
        name: str = "",
        version: str = "",
        status: Status = "active",
        visibility: Visibility = "public",
        configuration: Mapping[str, Any] | None = None,
    ) -> agents_pb2.AgentStoreServiceSetAgentResponse:
        """Create or replace an agent; the answer holds the agent as stored and whether it was created."""
        request = _set_request(uri, name, version, status, visibility, configuration)
        return await self._call(self._stub.SetAgent, request)

    async def delete(self, uri: str) -> bool:
        """Remove an agent; return whether there was one."""
        request = agents_pb2.AgentStoreServiceDeleteAgentRequest(uri=uri)
        return (await self._call(self._stub.DeleteAgent, request)).deleted

    async def search(self, query: str = "", *, page_size: int = 0) -> AsyncIterator[agents_pb2.StoredAgent]:
        """Yield the visible agents whose uri is `query` or whose name or configuration contains it."""
        token = ""
        while True:
            request = agents_pb2.AgentStoreServiceSearchAgentsRequest(
                query=query, page_size=page_size, page_token=token
            )
            response = await self._call(self._stub.SearchAgents, request)
            for agent in response.agents:
                yield agent
            token = response.next_page_token
            if not token:
                return

"""Stateful fuzzing of the agent registry: boundary agents written, read back and searched page by page."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from stord.v1 import agents_pb2 as pb
from stord.v1 import agents_pb2_grpc
from tests.conftest import DATABASE_BACKENDS, Daemons
from tests.fuzz._edges import FUZZ_SETTINGS, Caller, mutated_token, structs, texts

URIS = st.one_of(st.sampled_from(["agent://a", "agent://ключ", "%_*"]), texts(1024))


class AgentMachine(RuleBasedStateMachine):
    target = ""

    def __init__(self) -> None:
        super().__init__()
        self.call = Caller(self.target)
        self.stub = agents_pb2_grpc.AgentStoreServiceStub(self.call.channel)
        self.agents: dict[str, pb.StoredAgent] = {}

    def teardown(self) -> None:
        self.call.close()

    @rule(uri=URIS, name=texts(256), version=texts(256), configuration=st.one_of(st.none(), structs()))
    def set_agent(self, uri: str, name: str, version: str, configuration: Any) -> None:
        agent = pb.StoredAgent(
            uri=uri,
            name=name,
            version=version,
            status=pb.STORED_AGENT_STATUS_ACTIVE,
            visibility=pb.STORED_AGENT_VISIBILITY_PUBLIC,
            configuration=configuration,
        )
        answer = self.call(self.stub.SetAgent, pb.AgentStoreServiceSetAgentRequest(agent=agent))
        if isinstance(answer, pb.AgentStoreServiceSetAgentResponse):
            self.agents[uri] = answer.agent

    @invariant()
    def every_agent_reads_back_as_written(self) -> None:
        for uri, written in self.agents.items():
            got = self.call(self.stub.GetAgent, pb.AgentStoreServiceGetAgentRequest(uri=uri))
            assert isinstance(got, pb.AgentStoreServiceGetAgentResponse)
            assert got.agent == written

    @rule(query=st.one_of(st.just(""), texts(1024)), page_size=st.integers(1, 3), data=st.data())
    def search_pages(self, query: str, page_size: int, data: st.DataObject) -> None:
        request = pb.AgentStoreServiceSearchAgentsRequest(query=query, page_size=page_size)
        seen: list[str] = []
        for _ in range(100):
            answer = self.call(self.stub.SearchAgents, request)
            if not isinstance(answer, pb.AgentStoreServiceSearchAgentsResponse):
                return
            for agent in answer.agents:
                assert agent == self.agents[agent.uri]
                seen.append(agent.uri)
            if not answer.next_page_token:
                break
            token = answer.next_page_token
            self.call.refused_token(self.stub.SearchAgents, request, mutated_token(token, data), token)
            request.page_token = token
        assert len(seen) == len(set(seen)), "a page repeated an agent"
        if not query:
            assert set(seen) == set(self.agents)


@pytest.mark.parametrize("backend", DATABASE_BACKENDS)
def test_agent_fuzz(backend: str, daemons: Daemons) -> None:
    AgentMachine.target = daemons.get(backend).target
    run_state_machine_as_test(AgentMachine, settings=FUZZ_SETTINGS)

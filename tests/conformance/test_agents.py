"""The agent registry (DESIGN 4.5), through the real gRPC API and client, on every backend that serves it."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest

from stord.client import Client, InvalidArgument, PermissionDenied, Unimplemented, agent_configuration
from stord.client.errors import from_rpc_error
from stord.v1 import agents_pb2, agents_pb2_grpc
from tests.conftest import SharedDaemon

Caller = Callable[[str | None], Client]
"""Opens a client in the test's namespace as a principal (None: anonymous)."""


@pytest.fixture
def caller(database_served: SharedDaemon) -> Iterator[Caller]:
    namespace = f"t-{uuid.uuid4().hex[:12]}"
    clients: list[Client] = []

    def open_client(principal: str | None) -> Client:
        client = Client(database_served.target, namespace=namespace, principal=principal)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


def uris(client: Client, query: str = "", page_size: int = 0) -> list[str]:
    return [agent.uri for agent in client.agents.search(query, page_size=page_size)]


def raw_set(client: Client, agent: agents_pb2.StoredAgent) -> agents_pb2.AgentStoreServiceSetAgentResponse:
    """SetAgent through the bare stub, for requests the typed client cannot make."""
    stub = agents_pb2_grpc.AgentStoreServiceStub(client._channel)
    request = agents_pb2.AgentStoreServiceSetAgentRequest(agent=agent)
    try:
        return stub.SetAgent(request, metadata=client._call.metadata)
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None


# Reading and writing ---------------------------------------------------------------------------------------


def test_set_creates_then_replaces_and_get_returns_every_field(
    database_served: SharedDaemon, caller: Caller
) -> None:
    alice = caller("alice")
    configuration = {"model": "gpt", "tools": ["search", {"name": "calc"}], "temperature": 0.5, "x": None}
    created = alice.agents.set(
        "agent://a1", name="Planner", version="1.0", status="inactive", configuration=configuration
    )
    assert created.created
    assert created.agent.owner == "alice"
    assert created.agent.update_time.ToNanoseconds() == round(database_served.clock() * 1e9)
    agent = alice.agents.get("agent://a1")
    assert agent is not None
    assert (agent.uri, agent.name, agent.version) == ("agent://a1", "Planner", "1.0")
    assert agent.status == agents_pb2.STORED_AGENT_STATUS_INACTIVE
    assert agent.visibility == agents_pb2.STORED_AGENT_VISIBILITY_PUBLIC
    assert agent_configuration(agent) == configuration
    database_served.clock.advance(5)
    replaced = alice.agents.set("agent://a1", name="Planner 2")
    assert not replaced.created
    agent = alice.agents.get("agent://a1")
    assert agent is not None
    assert (agent.name, agent.version, agent.status) == (
        "Planner 2",
        "",
        agents_pb2.STORED_AGENT_STATUS_ACTIVE,
    )
    assert agent_configuration(agent) is None
    assert agent.update_time.ToNanoseconds() == round(database_served.clock() * 1e9)


def test_an_empty_configuration_differs_from_none(caller: Caller) -> None:
    client = caller(None)
    client.agents.set("empty", configuration={})
    client.agents.set("none")
    empty, none = client.agents.get("empty"), client.agents.get("none")
    assert empty is not None
    assert none is not None
    assert agent_configuration(empty) == {}
    assert agent_configuration(none) is None


def test_negative_zero_reads_back_as_the_set_answered_it(caller: Caller) -> None:
    """JSON stores disagree on -0 (PostgreSQL's jsonb drops its sign): every backend keeps it as 0."""
    client = caller(None)
    answered = client.agents.set("zero", configuration={"a": -0.0, "b": [-0.0]}).agent
    stored = client.agents.get("zero")
    assert stored is not None
    for agent in (answered, stored):
        configuration = agent_configuration(agent)
        assert configuration == {"a": 0, "b": [0]}
        assert configuration is not None
        assert math.copysign(1, configuration["a"]) == 1
        assert math.copysign(1, configuration["b"][0]) == 1


def test_get_and_delete_of_a_missing_agent(caller: Caller) -> None:
    client = caller(None)
    assert client.agents.get("missing") is None
    assert client.agents.delete("missing") is False
    client.agents.set("present")
    assert client.agents.delete("present") is True
    assert client.agents.get("present") is None
    assert uris(client) == []


def test_namespaces_do_not_see_each_other(database_served: SharedDaemon) -> None:
    with database_served.client() as first, database_served.client() as second:
        first.agents.set("shared-uri", name="first")
        assert second.agents.get("shared-uri") is None
        assert uris(second) == []
        second.agents.set("shared-uri", name="second")
        agent = first.agents.get("shared-uri")
        assert agent is not None
        assert agent.name == "first"


# Search ----------------------------------------------------------------------------------------------------


def test_search_matches_exact_uri_or_name_or_configuration_ignoring_case(caller: Caller) -> None:
    client = caller(None)
    client.agents.set("agent://alpha", name="Research Assistant")
    client.agents.set("agent://beta", name="Coder", configuration={"prompt": "You write PYTHON code"})
    client.agents.set("agent://gamma", name="Straße Planner")
    assert uris(client, "research") == ["agent://alpha"]
    assert uris(client, "python") == ["agent://beta"]
    assert uris(client, '"prompt"') == ["agent://beta"]  # the configuration's JSON text, keys included
    assert uris(client, "STRASSE") == ["agent://gamma"]  # Unicode case folding, not ASCII lowering
    assert uris(client, "agent://beta") == ["agent://beta"]
    assert uris(client, "agent://") == []  # a uri matches only exactly
    assert uris(client, "nothing like it") == []


def test_search_treats_like_wildcards_and_backslash_as_plain_characters(caller: Caller) -> None:
    client = caller(None)
    for uri, name in [
        ("percent", "100% sure"),
        ("digits", "1000 sure"),
        ("underscore", "snake_case"),
        ("letters", "snakeXcase"),
        ("backslash", "C:\\tools"),
        ("plain", "C:tools"),
    ]:
        client.agents.set(uri, name=name)
    assert uris(client, "100%") == ["percent"]
    assert uris(client, "%") == ["percent"]
    assert uris(client, "e_c") == ["underscore"]
    assert uris(client, "_") == ["underscore"]
    assert uris(client, ":\\t") == ["backslash"]
    assert uris(client, "*") == []


def test_search_lists_in_insertion_order_and_pages(caller: Caller) -> None:
    client = caller(None)
    names = [f"agent-{index}" for index in (5, 3, 9, 1, 7, 2, 8)]
    for name in names:
        client.agents.set(name, name="worker")
    assert uris(client) == names
    assert uris(client, "worker", page_size=2) == names
    assert uris(client, page_size=7) == names
    client.agents.set("agent-3", name="replaced, keeps its place")
    client.agents.delete("agent-9")
    client.agents.set("agent-9", name="worker")
    assert uris(client) == [name for name in names if name != "agent-9"] + ["agent-9"]


def test_search_page_tokens(caller: Caller) -> None:
    client = caller(None)
    for index in range(3):
        client.agents.set(f"a{index}")
    stub = agents_pb2_grpc.AgentStoreServiceStub(client._channel)
    metadata = client._call.metadata
    first = stub.SearchAgents(agents_pb2.AgentStoreServiceSearchAgentsRequest(page_size=2), metadata=metadata)
    assert [agent.uri for agent in first.agents] == ["a0", "a1"]
    request = agents_pb2.AgentStoreServiceSearchAgentsRequest(page_size=2, page_token=first.next_page_token)
    second = stub.SearchAgents(request, metadata=metadata)
    assert [agent.uri for agent in second.agents] == ["a2"]
    assert second.next_page_token == ""


# Ownership and visibility ----------------------------------------------------------------------------------


def test_a_private_agent_is_visible_only_to_its_owner(caller: Caller) -> None:
    alice, bob, anonymous = caller("alice"), caller("bob"), caller(None)
    alice.agents.set("secret", name="Private Planner", visibility="private")
    alice.agents.set("open", name="Public Planner")
    assert alice.agents.get("secret") is not None
    assert bob.agents.get("secret") is None
    assert anonymous.agents.get("secret") is None
    assert uris(alice, "planner") == ["secret", "open"]
    assert uris(bob, "planner") == ["open"]
    assert uris(anonymous) == ["open"]
    assert uris(bob, "secret") == []


def test_only_the_owner_can_overwrite_or_delete(caller: Caller) -> None:
    alice, bob, anonymous = caller("alice"), caller("bob"), caller(None)
    alice.agents.set("secret", name="mine", visibility="private")
    alice.agents.set("open", name="mine too")
    for intruder in (bob, anonymous):
        for uri in ("secret", "open"):
            with pytest.raises(PermissionDenied):
                intruder.agents.set(uri, name="taken over")
            with pytest.raises(PermissionDenied):
                intruder.agents.delete(uri)
    agent = alice.agents.get("secret")
    assert agent is not None
    assert (agent.name, agent.owner) == ("mine", "alice")
    assert alice.agents.delete("open") is True


def test_an_unowned_agent_is_claimed_by_the_next_principal_that_writes_it(caller: Caller) -> None:
    alice, bob, anonymous = caller("alice"), caller("bob"), caller(None)
    assert anonymous.agents.set("shared", name="anyone's").agent.owner == ""
    assert anonymous.agents.set("shared", name="still anyone's").agent.owner == ""
    assert bob.agents.set("shared", name="bob's now", visibility="private").agent.owner == "bob"
    with pytest.raises(PermissionDenied):
        alice.agents.set("shared")
    assert alice.agents.get("shared") is None


# Bad input -------------------------------------------------------------------------------------------------


def test_a_private_agent_needs_a_principal(caller: Caller) -> None:
    client = caller(None)
    with pytest.raises(InvalidArgument, match=r"agent\.visibility"):
        client.agents.set("secret", visibility="private")
    assert uris(client) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"uri": ""}, r"agent\.uri"),
        ({"uri": "x" * 1025}, r"agent\.uri"),
        ({"name": "nul\x00"}, r"agent\.name"),
        ({"status": agents_pb2.STORED_AGENT_STATUS_UNSPECIFIED}, r"agent\.status"),
        ({"status": 7}, r"agent\.status"),
        ({"visibility": agents_pb2.STORED_AGENT_VISIBILITY_UNSPECIFIED}, r"agent\.visibility"),
    ],
)
def test_set_rejects_bad_fields_by_name(caller: Caller, change: dict[str, object], field: str) -> None:
    client = caller("alice")
    fields: dict[str, object] = {
        "uri": "ok",
        "status": agents_pb2.STORED_AGENT_STATUS_ACTIVE,
        "visibility": agents_pb2.STORED_AGENT_VISIBILITY_PUBLIC,
        **change,
    }
    with pytest.raises(InvalidArgument, match=field):
        raw_set(client, agents_pb2.StoredAgent(**fields))  # type: ignore[arg-type]
    assert uris(client) == []


def test_set_rejects_a_configuration_json_cannot_hold(caller: Caller) -> None:
    client = caller(None)
    with pytest.raises(InvalidArgument, match=r"agent\.configuration"):
        client.agents.set("nan", configuration={"x": float("nan")})
    with pytest.raises(InvalidArgument, match=r"agent\.configuration\.deep\[0\]"):
        client.agents.set("nul", configuration={"deep": ["a\x00b"]})
    assert uris(client) == []


def test_bad_search_requests_name_the_field(caller: Caller) -> None:
    client = caller(None)
    with pytest.raises(InvalidArgument, match="query"):
        uris(client, "q" * 1025)
    with pytest.raises(InvalidArgument, match="page_size"):
        uris(client, page_size=-1)
    stub = agents_pb2_grpc.AgentStoreServiceStub(client._channel)
    for token in ("not base64!", "bm90IGEgbnVtYmVy"):  # the second is base64 of "not a number"
        request = agents_pb2.AgentStoreServiceSearchAgentsRequest(page_token=token)
        with pytest.raises(grpc.RpcError) as failure:
            stub.SearchAgents(request, metadata=client._call.metadata)
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (failure.value.details() or "")


def test_a_malformed_principal_is_rejected(database_served: SharedDaemon) -> None:
    with (
        Client(database_served.target, principal=" padded ") as client,
        pytest.raises(InvalidArgument, match="stord-principal"),
    ):
        client.agents.get("any")


# Backends that do not serve the contract -------------------------------------------------------------------


def test_redis_answers_unimplemented(redis_served: SharedDaemon) -> None:
    with redis_served.client() as client, pytest.raises(Unimplemented, match="AgentStoreService"):
        client.agents.get("any")

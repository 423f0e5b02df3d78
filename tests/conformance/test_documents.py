"""The document contract (DESIGN 4.2), through the real gRPC API and client, on memory, SQLite and PostgreSQL.

Every behaviour is defined once here and must hold on every backend: filters and sorts typed by JSON type,
revisions, shallow merges, paging, and transactions that leave no trace when one step fails.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import pytest

from stord.client import (
    AlreadyExists,
    Client,
    Conflict,
    CreateDocument,
    DeleteDocument,
    Document,
    EnqueuedJob,
    EnqueueJob,
    InvalidArgument,
    NotFound,
    StordError,
    Unimplemented,
    UpdateDocument,
)
from stord.v1 import documents_pb2, documents_pb2_grpc
from tests.conftest import SharedDaemon


def ids(documents: list[Document]) -> list[str]:
    return [document.id for document in documents]


def seed(client: Client, collection: str, rows: dict[str, dict[str, Any]]) -> None:
    client.documents.transact([CreateDocument(collection, data, id=key) for key, data in rows.items()])


def find_ids(client: Client, collection: str, *where: tuple[str, str, Any]) -> list[str]:
    return ids(client.documents.find(collection, where=where))


# Create, read, update, delete ------------------------------------------------------------------------------


def test_create_then_get_returns_the_document_as_stored(database_client: Client) -> None:
    data = {"name": "plan ü", "steps": [1, 2.5, None, True, {"x": "y"}], "owner": {"id": 7}, "empty": {}}
    created = database_client.documents.create("plans", data, id="p1")
    assert (created.collection, created.id, created.revision) == ("plans", "p1", 1)
    assert created.data == data
    assert created.create_time == created.update_time
    fetched = database_client.documents.get("plans", "p1")
    assert fetched == created
    assert isinstance(fetched.data["owner"]["id"], int)  # whole numbers come back whole


def test_the_server_makes_an_id_when_none_is_given(database_client: Client) -> None:
    first = database_client.documents.create("plans", {"n": 1})
    second = database_client.documents.create("plans", {"n": 2})
    assert len(first.id) == 36
    assert first.id != second.id
    assert database_client.documents.get("plans", first.id) == first


def test_get_of_a_missing_document_is_none(database_client: Client) -> None:
    assert database_client.documents.get("plans", "missing") is None


def test_an_id_that_exists_is_already_exists(database_client: Client) -> None:
    database_client.documents.create("plans", {"v": 1}, id="same")
    with pytest.raises(AlreadyExists):
        database_client.documents.create("plans", {"v": 2}, id="same")
    assert database_client.documents.get("plans", "same").data == {"v": 1}  # type: ignore[union-attr]
    database_client.documents.create("runs", {"v": 3}, id="same")  # ids are per collection


def test_update_merges_top_level_fields_and_bumps_the_revision(
    database_served: SharedDaemon, database_client: Client
) -> None:
    created = database_client.documents.create(
        "plans", {"a": 1, "nested": {"x": 1, "y": 2}, "keep": "k"}, id="p"
    )
    database_served.clock.advance(5)
    updated = database_client.documents.update("plans", "p", {"a": 2, "nested": {"x": 9}, "gone": None})
    assert updated.revision == 2
    assert updated.data == {"a": 2, "nested": {"x": 9}, "keep": "k", "gone": None}
    assert updated.create_time == created.create_time
    assert (updated.update_time - created.update_time).total_seconds() == pytest.approx(5, abs=0.01)
    assert database_client.documents.update("plans", "p", {}).revision == 3
    assert database_client.documents.get("plans", "p").revision == 3  # type: ignore[union-attr]


def test_expected_revisions_abort_on_mismatch(database_client: Client) -> None:
    database_client.documents.create("plans", {"v": 0}, id="p")
    database_client.documents.update("plans", "p", {"v": 1}, expected_revision=1)
    with pytest.raises(Conflict, match="revision 2"):
        database_client.documents.update("plans", "p", {"v": 99}, expected_revision=1)
    with pytest.raises(Conflict):
        database_client.documents.delete("plans", "p", expected_revision=1)
    assert database_client.documents.get("plans", "p").data == {"v": 1}  # type: ignore[union-attr]
    database_client.documents.delete("plans", "p", expected_revision=2)
    assert database_client.documents.get("plans", "p") is None


def test_update_and_delete_of_a_missing_document_are_not_found(database_client: Client) -> None:
    with pytest.raises(NotFound):
        database_client.documents.update("plans", "missing", {"v": 1})
    with pytest.raises(NotFound):
        database_client.documents.delete("plans", "missing")
    assert database_client.documents.get("plans", "missing") is None


def test_namespaces_do_not_see_each_others_documents(database_served: SharedDaemon) -> None:
    with database_served.client() as first, database_served.client() as second:
        first.documents.create("plans", {"owner": "first"}, id="p")
        assert second.documents.get("plans", "p") is None
        assert second.documents.count("plans") == 0
        second.documents.create("plans", {"owner": "second"}, id="p")
        assert first.documents.get("plans", "p").data == {"owner": "first"}  # type: ignore[union-attr]


# Filters ---------------------------------------------------------------------------------------------------

TYPED: dict[str, dict[str, Any]] = {
    "int": {"v": 1},
    "float": {"v": 1.5},
    "whole-float": {"v": 2.0},
    "string": {"v": "1"},
    "string-b": {"v": "b"},
    "true": {"v": True},
    "false": {"v": False},
    "null": {"v": None},
    "list": {"v": [1]},
    "object": {"v": {"w": 1}},
    "missing": {"other": 1},
}


@pytest.fixture
def typed(database_client: Client) -> Client:
    seed(database_client, "typed", TYPED)
    return database_client


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("eq", 1, ["int"]),
        ("eq", 1.0, ["int"]),
        ("eq", 2, ["whole-float"]),
        ("eq", "1", ["string"]),
        ("eq", True, ["true"]),
        ("eq", False, ["false"]),
        ("eq", None, ["null"]),
        ("ne", 1, sorted(set(TYPED) - {"int"})),
        ("ne", None, sorted(set(TYPED) - {"null"})),
        ("in", [1, "b", None, False], ["false", "int", "null", "string-b"]),
        ("in", ["missing"], []),
        ("gt", 1, ["float", "whole-float"]),
        ("gte", 1, ["float", "int", "whole-float"]),
        ("lt", 1.5, ["int"]),
        ("lte", 1.5, ["float", "int"]),
        ("gt", "1", ["string-b"]),
        ("gte", "1", ["string", "string-b"]),
        ("lt", "b", ["string"]),
        ("lte", "a", ["string"]),
    ],
)
def test_filters_compare_by_json_type(typed: Client, operator: str, value: Any, expected: list[str]) -> None:
    assert sorted(find_ids(typed, "typed", ("v", operator, value))) == expected


def test_strings_compare_by_code_point(database_client: Client) -> None:
    seed(
        database_client,
        "words",
        {"upper": {"w": "Z"}, "lower": {"w": "a"}, "accent": {"w": "é"}, "cjk": {"w": "中"}},
    )
    assert find_ids(database_client, "words", ("w", "gt", "Z")) == ["accent", "cjk", "lower"]
    assert find_ids(database_client, "words", ("w", "lt", "a")) == ["upper"]
    assert ids(database_client.documents.find("words", order_by=["w"])) == ["upper", "lower", "accent", "cjk"]


def test_filters_on_dotted_paths_never_enter_arrays(database_client: Client) -> None:
    seed(
        database_client,
        "nested",
        {
            "deep": {"owner": {"name": "ada", "team": {"size": 3}}},
            "flat": {"owner": "ada"},
            "array": {"owner": [{"name": "ada"}]},
            "keyed-zero": {"owner": {"name": "bob"}},
        },
    )
    assert find_ids(database_client, "nested", ("owner.name", "eq", "ada")) == ["deep"]
    assert find_ids(database_client, "nested", ("owner.team.size", "gte", 3)) == ["deep"]
    assert find_ids(database_client, "nested", ("owner.name", "ne", "ada")) == ["array", "flat", "keyed-zero"]


def test_filters_are_anded(database_client: Client) -> None:
    seed(
        database_client,
        "runs",
        {f"r{index}": {"status": "done" if index % 2 else "queued", "n": index} for index in range(10)},
    )
    where = [("status", "eq", "done"), ("n", "gte", 3), ("n", "lt", 8)]
    assert ids(database_client.documents.find("runs", where=where)) == ["r3", "r5", "r7"]
    assert database_client.documents.count("runs", where=where) == 3
    assert database_client.documents.count("runs") == 10
    assert database_client.documents.count("empty-collection") == 0


# Sorting and paging ----------------------------------------------------------------------------------------


def test_sort_orders_types_then_values_and_ties_by_id(typed: Client) -> None:
    ascending = ids(typed.documents.find("typed", order_by=["v"]))
    assert ascending == [
        "missing", "null",  # missing and null tie, ordered by id
        "false", "true",
        "int", "float", "whole-float",
        "string", "string-b",
        "list", "object",  # arrays and objects tie, ordered by id
    ]  # fmt: skip
    descending = ids(typed.documents.find("typed", order_by=["-v"]))
    assert descending == [
        "list", "object",
        "string-b", "string",
        "whole-float", "float", "int",
        "true", "false",
        "missing", "null",
    ]  # fmt: skip


def test_sort_on_several_fields(database_client: Client) -> None:
    seed(
        database_client,
        "people",
        {
            "a": {"team": "red", "age": 30},
            "b": {"team": "blue", "age": 30},
            "c": {"team": "red", "age": 25},
            "d": {"team": "blue", "age": 41},
            "e": {"team": "red", "age": 30},
        },
    )
    assert ids(database_client.documents.find("people", order_by=["team", "-age"])) == [
        "d",
        "b",
        "a",
        "e",
        "c",
    ]
    assert ids(database_client.documents.find("people", order_by=["-age", "team"])) == [
        "d",
        "b",
        "a",
        "e",
        "c",
    ]


def test_limit_offset_and_page_tokens(database_client: Client) -> None:
    seed(database_client, "items", {f"i{index:02d}": {"n": index % 7} for index in range(23)})
    everything = ids(database_client.documents.find("items", order_by=["n"], limit=1000))
    assert len(everything) == 23
    assert (
        ids(database_client.documents.find("items", order_by=["n"], limit=5, offset=10)) == everything[10:15]
    )
    paged = ids(list(database_client.documents.find_all("items", order_by=["n"], page_size=4)))
    assert paged == everything
    assert ids(database_client.documents.find("items", offset=100)) == []


def test_a_page_token_belongs_to_its_query(database_client: Client) -> None:
    seed(database_client, "items", {f"i{index}": {"n": index} for index in range(5)})
    stub = documents_pb2_grpc.DocumentServiceStub(database_client._channel)
    metadata = database_client._call.metadata
    first = stub.ListDocuments(
        documents_pb2.ListDocumentsRequest(collection="items", page_size=2), metadata=metadata
    )
    assert first.next_page_token
    other_query = documents_pb2.ListDocumentsRequest(
        collection="items",
        page_size=2,
        page_token=first.next_page_token,
        order_by=[documents_pb2.DocumentOrder(field="n")],
    )
    with pytest.raises(grpc.RpcError) as failure:
        stub.ListDocuments(other_query, metadata=metadata)
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (failure.value.details() or "")
    with_offset = documents_pb2.ListDocumentsRequest(
        collection="items", page_token=first.next_page_token, offset=1
    )
    with pytest.raises(grpc.RpcError, match="offset"):
        stub.ListDocuments(with_offset, metadata=metadata)


def test_an_index_changes_no_answer(database_client: Client) -> None:
    seed(database_client, "indexed", TYPED)
    queries: list[tuple[str, str, Any]] = [
        ("v", "eq", 1),
        ("v", "gt", 1),
        ("v", "lte", "b"),
        ("v", "ne", None),
        ("v", "in", [True, "1"]),
    ]
    before = [find_ids(database_client, "indexed", query) for query in queries]
    sorted_before = ids(database_client.documents.find("indexed", order_by=["-v"]))
    database_client.documents.create_index("indexed", "v")
    database_client.documents.create_index("indexed", "v")  # again: nothing to do
    database_client.documents.create_index("indexed", "other.deep")
    assert [find_ids(database_client, "indexed", query) for query in queries] == before
    assert ids(database_client.documents.find("indexed", order_by=["-v"])) == sorted_before
    database_client.documents.update("indexed", "int", {"v": 5})
    assert find_ids(database_client, "indexed", ("v", "eq", 5)) == ["int"]


# Transactions ----------------------------------------------------------------------------------------------


def test_transact_applies_every_step_in_order(database_client: Client) -> None:
    database_client.documents.create("plans", {"state": "draft"}, id="old")
    results = database_client.documents.transact(
        [
            CreateDocument("plans", {"state": "new"}, id="p1"),
            UpdateDocument("plans", "p1", {"state": "ready"}, expected_revision=1),
            DeleteDocument("plans", "old"),
            EnqueueJob("runs", {"plan": "p1"}),
        ]
    )
    created, updated, deleted, enqueued = results
    assert isinstance(created, Document)
    assert created.revision == 1
    assert isinstance(updated, Document)
    assert updated.revision == 2
    assert updated.data == {"state": "ready"}
    assert deleted is True
    assert isinstance(enqueued, EnqueuedJob)
    assert not enqueued.deduplicated
    assert database_client.documents.get("plans", "old") is None
    job = database_client.jobs.get(enqueued.job_id)
    assert job is not None
    assert job.payload == {"plan": "p1"}


@pytest.mark.parametrize(
    ("failing_step", "error", "status"),
    [
        (UpdateDocument("plans", "missing", {"x": 1}), NotFound, "NOT_FOUND"),
        (CreateDocument("plans", {"x": 1}, id="existing"), AlreadyExists, "ALREADY_EXISTS"),
        (DeleteDocument("plans", "existing", expected_revision=7), Conflict, "ABORTED"),
    ],
)
def test_a_failing_third_step_leaves_no_trace_of_the_first_two(
    database_client: Client, failing_step: Any, error: type[StordError], status: str
) -> None:
    database_client.documents.create("plans", {"state": "before"}, id="existing")
    with pytest.raises(error, match=r"operations\[2\]") as failure:
        database_client.documents.transact(
            [
                CreateDocument("plans", {"state": "new"}, id="created-then-undone"),
                EnqueueJob("runs", {"plan": "created-then-undone"}, dedupe_key="run-1"),
                failing_step,
                UpdateDocument("plans", "existing", {"state": "after"}),
            ]
        )
    assert failure.value.code.name == status
    assert database_client.documents.get("plans", "created-then-undone") is None
    existing = database_client.documents.get("plans", "existing")
    assert existing is not None
    assert existing.data == {"state": "before"}
    assert existing.revision == 1
    assert database_client.jobs.stats("runs").pending == 0
    assert database_client.jobs.dequeue("runs") == []
    # The dedupe key was not left taken either.
    assert not database_client.jobs.enqueue_many([EnqueueJob("runs", dedupe_key="run-1")])[0].deduplicated


def test_transact_steps_see_the_earlier_steps(database_client: Client) -> None:
    results = database_client.documents.transact(
        [
            CreateDocument("plans", {"n": 1}, id="p"),
            UpdateDocument("plans", "p", {"n": 2}),
            UpdateDocument("plans", "p", {"m": 3}, expected_revision=2),
            DeleteDocument("plans", "p", expected_revision=3),
            CreateDocument("plans", {"again": True}, id="p"),
        ]
    )
    assert [result.revision for result in results if isinstance(result, Document)] == [1, 2, 3, 1]
    assert database_client.documents.get("plans", "p").data == {"again": True}  # type: ignore[union-attr]


def test_transact_with_an_invalid_step_writes_nothing(database_client: Client) -> None:
    stub = documents_pb2_grpc.DocumentServiceStub(database_client._channel)
    request = documents_pb2.TransactRequest(
        operations=[
            documents_pb2.TransactOperation(
                create=documents_pb2.CreateDocumentRequest(collection="plans", document_id="x")
            ),
            documents_pb2.TransactOperation(),
        ]
    )
    with pytest.raises(grpc.RpcError) as failure:
        stub.Transact(request, metadata=database_client._call.metadata)
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "operations[1]" in (failure.value.details() or "")
    with pytest.raises(InvalidArgument, match=r"operations\[0\]\.create\.data\.bad"):
        database_client.documents.transact([CreateDocument("plans", {"bad": math.nan})])
    assert database_client.documents.get("plans", "x") is None
    assert database_client.documents.count("plans") == 0


# Bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.documents.create("bad name", {}), "collection"),
        (lambda c: c.documents.create("", {}), "collection"),
        (lambda c: c.documents.create("plans", {}, id="x" * 300), "document_id"),
        (lambda c: c.documents.create("plans", {"n": math.inf}), "data.n"),
        (lambda c: c.documents.create("plans", {"deep": {"s": "nul\x00"}}), "data.deep.s"),
        (lambda c: c.documents.create("plans", {"big": "x" * (1024 * 1024 + 1)}), "data"),
        (lambda c: c.documents.get("plans", ""), "document_id"),
        (lambda c: c.documents.find("plans", where=[("a..b", "eq", 1)]), "filters[0].field"),
        (
            lambda c: c.documents.find("plans", where=[("a", "eq", 1), ("items[0]", "eq", 1)]),
            "filters[1].field",
        ),
        (lambda c: c.documents.find("plans", where=[("a.1", "eq", 1)]), "filters[0].field"),
        (
            lambda c: c.documents.find("plans", where=[("a'); DROP TABLE documents; --", "eq", 1)]),
            "filters[0].field",
        ),
        (lambda c: c.documents.find("plans", where=[("a", "gt", True)]), "filters[0].value"),
        (lambda c: c.documents.find("plans", where=[("a", "lt", None)]), "filters[0].value"),
        (lambda c: c.documents.find("plans", where=[("a", "eq", [1])]), "filters[0].value"),
        (lambda c: c.documents.find("plans", where=[("a", "eq", {"b": 1})]), "filters[0].value"),
        (lambda c: c.documents.find("plans", where=[("a", "in", 1)]), "filters[0].value"),
        (lambda c: c.documents.find("plans", where=[("a", "in", [])]), "filters[0].value"),
        (lambda c: c.documents.find("plans", where=[("a", "in", [[1]])]), "filters[0].value[0]"),
        (lambda c: c.documents.find("plans", order_by=["-"]), "order_by[0].field"),
        (lambda c: c.documents.find("plans", offset=-1), "offset"),
        (lambda c: c.documents.find("plans", limit=-1), "page_size"),
        (lambda c: c.documents.count("plans", where=[("a", "eq", math.nan)]), "filters[0].value"),
        (lambda c: c.documents.create_index("plans", "a b"), "field"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(
    database_client: Client, call: Any, field: str
) -> None:
    with pytest.raises(InvalidArgument) as failure:
        call(database_client)
    assert failure.value.message.startswith(f"{field}:"), failure.value.message
    assert database_client.documents.count("plans") == 0


def test_unspecified_operator_and_unset_value_are_invalid(database_client: Client) -> None:
    stub = documents_pb2_grpc.DocumentServiceStub(database_client._channel)
    metadata = database_client._call.metadata
    for condition, field in [
        (documents_pb2.DocumentFilter(field="a"), "filters[0].operator"),
        (
            documents_pb2.DocumentFilter(field="a", operator=documents_pb2.FILTER_OPERATOR_EQ),
            "filters[0].value",
        ),
    ]:
        request = documents_pb2.CountDocumentsRequest(collection="plans", filters=[condition])
        with pytest.raises(grpc.RpcError) as failure:
            stub.CountDocuments(request, metadata=metadata)
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (failure.value.details() or "").startswith(f"{field}:")


def test_redis_does_not_serve_documents(redis_served: SharedDaemon) -> None:
    with redis_served.client() as client, pytest.raises(Unimplemented, match=r"stord\.v1\.DocumentService"):
        client.documents.get("plans", "p")

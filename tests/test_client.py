"""The client package: the async twin matches the blocking client, and statuses become exceptions."""

from __future__ import annotations

import datetime
import inspect

import grpc
import pytest

from stord import client as stord_client
from stord.client import _convert, _events_codec, errors
from stord.client._ingest_async import _broken


@pytest.mark.parametrize(
    ("blocking", "asynchronous"),
    [
        (stord_client.Client, stord_client.AsyncClient),
        (stord_client.Cache, stord_client.AsyncCache),
        (stord_client.Database, stord_client.AsyncDatabase),
        (stord_client.Agents, stord_client.AsyncAgents),
        (stord_client.Manifests, stord_client.AsyncManifests),
        (stord_client.Documents, stord_client.AsyncDocuments),
        (stord_client.Jobs, stord_client.AsyncJobs),
        (stord_client.Worker, stord_client.AsyncWorker),
        (stord_client.Events, stord_client.AsyncEvents),
        (stord_client.EventTail, stord_client.AsyncEventTail),
    ],
)
def test_async_twin_has_the_same_methods_and_signatures(blocking: type, asynchronous: type) -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_")
        }

    blocking_methods, async_methods = public(blocking), public(asynchronous)
    assert blocking_methods.keys() == async_methods.keys()
    for name, signature in blocking_methods.items():
        assert list(signature.parameters) == list(async_methods[name].parameters), name
        assert inspect.iscoroutinefunction(getattr(asynchronous, name)) or inspect.isasyncgenfunction(
            getattr(asynchronous, name)
        ), name


class _FailedCall(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.ABORTED, errors.Conflict),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.DATA_LOSS, errors.StordError),
    ],
)
def test_status_codes_map_to_exceptions(code: grpc.StatusCode, cls: type[errors.StordError]) -> None:
    error = errors.from_rpc_error(_FailedCall(code, "key: must not be empty"))
    assert type(error) is cls
    assert error.code is code
    assert error.message == "key: must not be empty"
    assert str(error) == f"{code.name}: key: must not be empty"


@pytest.mark.parametrize(("namespace", "principal"), [("ünï", None), ("ok", "ünï"), ("tab\there", None)])
def test_metadata_that_grpc_cannot_carry_is_refused_up_front(namespace: str, principal: str | None) -> None:
    with pytest.raises(ValueError, match="must be printable ASCII"):
        stord_client.Client("127.0.0.1:1", namespace=namespace, principal=principal)


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC),
        datetime.datetime(2024, 5, 6, 9, 8, 9, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
        1_714_979_289.5,
    ],
)
def test_every_contract_converts_times_alike(value: datetime.datetime | float) -> None:
    assert _convert.timestamp(value) == _events_codec.timestamp(value)
    expected = (
        value
        if isinstance(value, datetime.datetime)
        else datetime.datetime.fromtimestamp(value, datetime.UTC)
    )
    assert _convert.moment(_convert.timestamp(value)) == expected


def test_naive_datetimes_are_refused_by_every_contract() -> None:
    naive = datetime.datetime(2024, 5, 6, 7, 8, 9)
    for convert in (_convert.timestamp, _events_codec.timestamp):
        with pytest.raises(ValueError, match="naive datetimes are ambiguous"):
            convert(naive)
    with stord_client.Client("127.0.0.1:1") as client, pytest.raises(ValueError, match="naive"):
        client.jobs.enqueue("q", run_at=naive)  # refused before any call is made


def test_the_async_ingestor_resends_after_a_broken_connection_but_not_after_a_refusal() -> None:
    assert _broken(_FailedCall(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    # grpc.aio's report of a connection lost in the middle of a write (a daemon killed under the stream):
    assert _broken(_FailedCall(grpc.StatusCode.INTERNAL, "Internal error from Core"))
    assert not _broken(_FailedCall(grpc.StatusCode.INTERNAL, "internal error (request id 7f3a)"))
    assert not _broken(_FailedCall(grpc.StatusCode.FAILED_PRECONDITION, "batch sequence 2: ..."))


@pytest.mark.parametrize("target", ["http://127.0.0.1:50051", "grpc://localhost:50051", "HTTPS://db:443"])
def test_a_target_with_a_url_scheme_is_refused_at_once(target: str) -> None:
    with pytest.raises(ValueError, match="without a URL scheme"):
        stord_client.Client(target)


def test_an_unknown_granularity_names_the_known_ones() -> None:
    with stord_client.Client("127.0.0.1:1") as client, pytest.raises(ValueError, match="day, hour, week"):
        client.events.analytics(from_time=0, to_time=1, granularity="minute")  # refused before any call

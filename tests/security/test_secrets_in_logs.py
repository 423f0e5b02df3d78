"""Credentials never reach the log: whatever a client sends as a key, no line the daemon writes holds it.

The daemon runs as a process of its own with its stdout and stderr captured, at debug level, so grpc's own
messages (its Cython layer logs a header it cannot decode, bytes and all) are seen as an operator would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stord.server.logs import REDACTED, redact
from stord.server.rpc.auth import Role
from stord.v1 import kv_pb2
from tests.harness.auth import Tenant, write_keys
from tests.harness.raw_grpc import raw_unary_call
from tests.harness.served import Served


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[Served, Tenant, Tenant]]:
    first = Tenant("first", "one", "svc-one", Role.READ_WRITE)
    second = Tenant("second", "two", "svc-two", Role.READ_WRITE)
    keys_file = write_keys(tmp_path / "keys.yaml", [first, second])
    data = tmp_path / "data"
    served = Served(
        data, "--database", "memory://", "--api-keys-file", str(keys_file), "--log-level", "debug"
    )
    try:
        yield served, first, second
    finally:
        served.stop()


_GET = "/stord.v1.DatabaseService/Get"
_REQUEST = kv_pb2.DatabaseServiceGetRequest(key="k").SerializeToString()
_OK, _UNAUTHENTICATED = 0, 16


def _get(target: str, metadata: list[tuple[bytes, bytes]]) -> int | None:
    """Return the grpc-status of a Get sent with `metadata` byte for byte."""
    return raw_unary_call(target, _GET, _REQUEST, metadata).status


def test_no_key_reaches_the_log_whatever_the_client_sends(keyed: tuple[Served, Tenant, Tenant]) -> None:
    served, first, second = keyed
    bearer, other = f"Bearer {first.secret}".encode(), f"Bearer {second.secret}".encode()
    assert _get(served.address, [(b"authorization", bearer)]) == _OK
    hostile: list[list[tuple[bytes, bytes]]] = [
        [(b"authorization", bearer + b"\xff")],  # not UTF-8: grpc's Cython layer logs the raw bytes
        [(b"authorization", b"\xc3" + bearer)],
        [(b"authorization", bearer[:7] + b"\xff" + bearer[7:])],
        [(b"authorization", bearer + b"x" * 6000)],  # oversized
        [(b"authorization", bearer + b"\xfe" * 3000)],
        [(b"authorization", bearer), (b"authorization", other)],  # repeated
        [(b"authorization", bearer + b"\xff"), (b"authorization", bearer)],
        [(b"authorization", first.secret.encode() + b"\xff")],  # without its scheme
        [(b"authorization", bearer), (b"stord-namespace", first.secret.encode() + b"\xfe")],
        [(b"authorization", bearer), (b"stord-principal", bearer + b"\x80")],
    ]
    for metadata in hostile:
        assert _get(served.address, metadata) != _OK, metadata
    served.stop()
    log = served.log.read_bytes().decode("utf-8", "backslashreplace")
    assert "rpc" in log  # the daemon did log the calls, at debug level
    for key in (first.secret, second.secret):
        body = key.removeprefix("stord_")
        for fragment in (body[:12], body[-12:]):
            assert fragment not in log, "an API key reached the log"


def test_two_authorization_values_are_unauthenticated(keyed: tuple[Served, Tenant, Tenant]) -> None:
    served, first, second = keyed
    same, other = f"Bearer {first.secret}".encode(), f"Bearer {second.secret}".encode()
    for metadata in (
        [(b"authorization", same), (b"authorization", other)],
        [(b"authorization", same), (b"authorization", same)],
        [(b"authorization", same), (b"authorization", b"Bearer nonsense")],
        [(b"authorization", same), (b"authorization", b"\xff")],
    ):
        assert _get(served.address, metadata) == _UNAUTHENTICATED


@pytest.mark.parametrize(
    "text",
    [
        "Invalid encoding on b'Bearer stord_AbC-12_xYz0987654321\\xff'",
        "authorization: bearer\tstord_AbC-12_xYz0987654321, next",
        "key=stord_AbC-12_xYz0987654321",
        "BEARER opaque-token-value",
        "b'\\xc3Bearer\\xffstord_AbC-12_xYz0987654321'",
    ],
)
def test_redact_removes_bearer_values_and_keys(text: str) -> None:
    cleaned = redact(text)
    assert "AbC-12_xYz0987654321" not in cleaned
    assert "opaque-token-value" not in cleaned
    assert REDACTED in cleaned


def test_redact_keeps_names_that_only_start_like_a_key() -> None:
    text = "postgres_listen_failed channel=stord_jobs url=postgresql://127.0.0.1/stord_4242_7"
    assert redact(text) == text

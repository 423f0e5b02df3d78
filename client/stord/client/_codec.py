"""Conversions shared by the sync and async clients."""

from __future__ import annotations

import datetime
import json
import queue
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration

from stord.client._retry import RetryPolicy, channel_options
from stord.client.errors import StordError, Unavailable, from_rpc_error
from stord.v1 import kv_pb2

_Choice = TypeVar("_Choice")

TTL = float | datetime.timedelta
"""Seconds, or a timedelta."""

DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRY = RetryPolicy()
NAMESPACE_METADATA = "stord-namespace"
PRINCIPAL_METADATA = "stord-principal"
"""Who the caller is when the daemon has no API keys: the daemon owns agents by it."""
AUTHORIZATION_METADATA = "authorization"


@dataclass(frozen=True, slots=True)
class Tls:
    """How the client verifies the daemon and, for mTLS, proves who it is (all PEM bytes).

    `root_certificates` None trusts the system's roots; `private_key` with `certificate_chain` is the
    client certificate a daemon started with `--tls-client-ca` requires.
    """

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """Return the gRPC channel credentials."""
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("private_key and certificate_chain go together")
        return grpc.ssl_channel_credentials(self.root_certificates, self.private_key, self.certificate_chain)


MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The largest message a channel sends or receives unless its options say otherwise: above the daemon's own
limit (16 MiB by default, `max_message_bytes`), so the daemon's limit is the one that applies, and a value of
the largest size (8 MiB) reads back instead of failing at gRPC's 4 MiB receive default."""

_SCHEMES = ("http://", "https://", "grpc://", "grpcs://", "dns://", "tcp://")


def _channel_arguments(
    target: str, options: Iterable[tuple[str, Any]], retry: RetryPolicy | None
) -> list[tuple[str, Any]]:
    """Check the target and return the channel's options: the retry policy's, then the caller's."""
    if target.lower().startswith(_SCHEMES):
        raise ValueError(f"target {target!r}: give host:port (or unix:/path.sock), without a URL scheme")
    given = list(options)
    names = {name for name, _ in given}
    limits = [
        (name, MAX_MESSAGE_BYTES)
        for name in ("grpc.max_receive_message_length", "grpc.max_send_message_length")
        if name not in names
    ]
    return channel_options(retry, limits + given)


def channel(
    target: str, tls: Tls | bool, options: Iterable[tuple[str, Any]], retry: RetryPolicy | None
) -> grpc.Channel:
    """Open a blocking channel, encrypted when `tls` is set (True: system roots, no client certificate).

    `retry` retries the idempotent RPCs after UNAVAILABLE and reconnects quickly (None: gRPC's defaults).
    """
    arguments = _channel_arguments(target, options, retry)
    if tls is False:
        return grpc.insecure_channel(target, options=arguments)
    settings = Tls() if tls is True else tls
    return grpc.secure_channel(target, settings.credentials(), options=arguments)


def aio_channel(
    target: str, tls: Tls | bool, options: Iterable[tuple[str, Any]], retry: RetryPolicy | None
) -> grpc.aio.Channel:
    """Open an asyncio channel, as `channel` does a blocking one."""
    arguments = _channel_arguments(target, options, retry)
    if tls is False:
        return grpc.aio.insecure_channel(target, options=arguments)
    settings = Tls() if tls is True else tls
    return grpc.aio.secure_channel(target, settings.credentials(), options=arguments)


def call_failure(
    error: grpc.RpcError, *, timeout: float | None, waited_for_ready: bool, connected: Callable[[], bool]
) -> StordError:
    """Return the StordError of a failed call.

    A call that waited for a connection (`wait_for_ready`) until its deadline was never sent: that is
    Unavailable, not DEADLINE_EXCEEDED, told apart by the channel having no connection now (`connected`,
    asked only then, since a blocking channel answers it from a thread).
    """
    if waited_for_ready and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and not connected():
        return Unavailable(
            f"no connection to the daemon within the deadline ({timeout:g} s): it is down or restarting, or"
            " it refuses the connection (check the address and the TLS settings)"
        )
    return from_rpc_error(error)


def is_connected(channel: grpc.Channel) -> bool:
    """Return whether a blocking channel has a connection now (gRPC reports its state from a thread)."""
    states: queue.SimpleQueue[grpc.ChannelConnectivity] = queue.SimpleQueue()
    report = states.put
    channel.subscribe(report)
    try:
        return states.get(timeout=1.0) is grpc.ChannelConnectivity.READY
    except queue.Empty:
        return False
    finally:
        channel.unsubscribe(report)


def waits_for_ready(retry: RetryPolicy | None, timeout: float | None) -> bool:
    """Return whether calls wait for an unreachable daemon: only when asked, and only with a deadline."""
    return retry is not None and retry.wait_for_ready and timeout is not None


def duration(ttl: TTL | None) -> Duration | None:
    """Return a protobuf Duration for a TTL, None for no expiry."""
    if ttl is None:
        return None
    seconds = ttl.total_seconds() if isinstance(ttl, datetime.timedelta) else float(ttl)
    message = Duration()
    message.FromNanoseconds(round(seconds * 1e9))
    return message


def condition(if_absent: bool, if_present: bool) -> kv_pb2.SetCondition.ValueType | None:
    """Return the proto condition of a conditional set, None for an unconditional one."""
    if if_absent and if_present:
        raise ValueError("if_absent and if_present exclude each other")
    if if_absent:
        return kv_pb2.SET_CONDITION_IF_ABSENT
    if if_present:
        return kv_pb2.SET_CONDITION_IF_PRESENT
    return None


def metadata(
    namespace: str | None, principal: str | None = None, api_key: str | None = None
) -> tuple[tuple[str, str], ...]:
    """Return the call metadata that selects a namespace, names the caller's principal and carries its key.

    gRPC metadata is ASCII, so anything else is refused here rather than failing every call obscurely.
    """
    bearer = None if api_key is None else f"Bearer {api_key}"
    pairs = [
        (NAMESPACE_METADATA, namespace),
        (PRINCIPAL_METADATA, principal),
        (AUTHORIZATION_METADATA, bearer),
    ]
    for name, value in pairs:
        if value is not None and not (value.isascii() and value.isprintable()):
            if name == AUTHORIZATION_METADATA:
                raise ValueError("api_key must be printable ASCII")  # never echo a secret
            raise ValueError(f"{name.removeprefix('stord-')} must be printable ASCII, got {value!r}")
    return tuple((name, value) for name, value in pairs if value is not None)


def choice(value: str, options: Mapping[Any, _Choice], what: str) -> _Choice:
    """Return the option named `value`; an unknown name is a ValueError listing the known ones."""
    try:
        return options[value]
    except KeyError:
        raise ValueError(f"{what} must be one of {', '.join(sorted(options))}, got {value!r}") from None


def dump_json(document: Any) -> bytes:
    """Encode a JSON value compactly."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def load_json(data: bytes | None) -> Any:
    """Decode a JSON value; None stays None (a missing key)."""
    return None if data is None else json.loads(data)


def values(results: Any) -> list[bytes | None]:
    """Return MGet results as values, None for a missing key."""
    return [result.value if result.found else None for result in results]

"""The one interceptor every RPC passes: request id, authentication, namespace, error mapping, access log,
metrics.

One wrapper does them all so an RPC pays for one extra coroutine frame, not five.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc import StatusCode

from stord.server.logs import ALL_CALLS, AccessLog
from stord.server.metrics import Metrics, RpcMeter
from stord.server.ports import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    StoreError,
    Unavailable,
    Unimplemented,
)
from stord.server.rpc.auth import ApiKey, KeyRing, permits
from stord.server.rpc.calls import (
    NAMESPACE_METADATA,
    PRINCIPAL_METADATA,
    Call,
    current_call,
    resolve_namespace,
    resolve_principal,
)
from stord.server.rpc.revocation import OpenCalls, Revoked, Watch

__all__ = ["CallInterceptor", "status_for"]

AUTHORIZATION_METADATA = "authorization"
_INTERCEPTED = ("/stord.", "/opentelemetry.proto.collector.")
"""Methods that run in a namespace, behind auth and in the access log: stord's and OTLP ingest. Health checks
and reflection are left alone."""

_log = structlog.get_logger("stord.rpc")

_LONG_POLLS = frozenset({"/stord.v1.JobQueueService/Dequeue"})
"""Unary methods that may wait long for their answer, so a key revoked meanwhile must end them."""

_STATUS_BY_ERROR: dict[type[StoreError], StatusCode] = {
    NotFound: StatusCode.NOT_FOUND,
    AlreadyExists: StatusCode.ALREADY_EXISTS,
    Conflict: StatusCode.ABORTED,
    InvalidArgument: StatusCode.INVALID_ARGUMENT,
    FailedPrecondition: StatusCode.FAILED_PRECONDITION,
    Unavailable: StatusCode.UNAVAILABLE,
    Unimplemented: StatusCode.UNIMPLEMENTED,
    PermissionDenied: StatusCode.PERMISSION_DENIED,
    ResourceExhausted: StatusCode.RESOURCE_EXHAUSTED,
}

Context = grpc.aio.ServicerContext[Any, Any]
# grpc's stubs type behaviours as sync callables; under grpc.aio they return coroutines or async iterators.
_AsyncUnary = Callable[[Any, Context], Awaitable[Any]]
_AsyncStreaming = Callable[[Any, Context], AsyncIterator[Any]]
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def status_for(error: StoreError) -> StatusCode:
    """Return the gRPC status of a domain error (DESIGN 5)."""
    for cls in type(error).__mro__:
        status = _STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return StatusCode.INTERNAL


class _Outcome:
    """What the access log and the metrics report about one RPC."""

    __slots__ = ("call", "key", "meter", "started", "status")

    def __init__(self, call: Call, started: float, meter: RpcMeter | None, key: ApiKey | None = None) -> None:
        self.call = call
        self.key = key
        """The API key the call presented; None when authentication is off."""
        self.started = started
        self.meter = meter
        self.status = StatusCode.OK


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Run every stord RPC inside a `Call`, turn domain errors into statuses and log the outcome."""

    def __init__(
        self,
        keys: KeyRing | None = None,
        metrics: Metrics | None = None,
        access_log: tuple[AccessLog, AccessLog] = (ALL_CALLS, ALL_CALLS),
    ) -> None:
        self._keys = keys
        """With keys, every stord RPC needs one, and the namespace and principal are the key's."""
        self._metrics = metrics
        self._unary_log, self._stream_log = access_log
        """Which finished calls are logged: unary (and client-streaming) calls, and response streams."""
        self._open_calls = None if keys is None else OpenCalls(keys)
        """The streams and long polls open now, ended when a key reload takes their key's right away."""
        # The wrapped handler of each method, built on its first call rather than on every call.
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Request, _Response] | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or not method.startswith(_INTERCEPTED):
            return handler  # health checks and reflection: no namespace, no access log
        behaviour: Any  # see _AsyncUnary
        wrap: Callable[[str, Any, bool, RpcMeter | None], Any]
        if (behaviour := handler.unary_unary) is not None:
            wrap, make, grpc_type = self._unary, grpc.unary_unary_rpc_method_handler, "unary"
        elif (behaviour := handler.unary_stream) is not None:
            wrap, make, grpc_type = self._streaming, grpc.unary_stream_rpc_method_handler, "server_stream"
        elif (behaviour := handler.stream_unary) is not None:
            wrap, make, grpc_type = self._unary, grpc.stream_unary_rpc_method_handler, "client_stream"
        else:
            behaviour = handler.stream_stream
            wrap, make, grpc_type = self._streaming, grpc.stream_stream_rpc_method_handler, "bidi_stream"
        parse = handler.request_deserializer
        meter = None if self._metrics is None else self._metrics.rpc(method, grpc_type)
        wrapped = self._wrapped[method] = make(
            wrap(method, behaviour, handler.request_streaming, meter),
            request_deserializer=None if parse is None else _tolerant(parse),
            response_serializer=handler.response_serializer,
        )
        return wrapped

    def _watching(self, outcome: _Outcome | None) -> AbstractContextManager[Watch | None]:
        """Watch a stream or long poll for its key's revocation; nothing for calls without a key."""
        if outcome is None or outcome.key is None or self._open_calls is None:
            return contextlib.nullcontext()
        return self._open_calls.watching(outcome.call, outcome.key)

    def _unary(
        self, method: str, behaviour: _AsyncUnary, request_streaming: bool, meter: RpcMeter | None
    ) -> _AsyncUnary:
        watched = request_streaming or method in _LONG_POLLS

        async def serve(request: Any, context: Context) -> Any:
            outcome = await _begin(method, context, self._keys, meter)
            try:
                answer = behaviour(_checked(request, request_streaming, meter), context)
                with self._watching(outcome if watched else None) as watch:
                    return await (answer if watch is None else watch.race(answer))
            except BaseException as error:
                await _fail(outcome, error, context)
                raise
            finally:
                _finish(outcome, context, self._unary_log)

        return serve

    def _streaming(
        self, method: str, behaviour: _AsyncStreaming, request_streaming: bool, meter: RpcMeter | None
    ) -> _AsyncStreaming:
        async def serve(request: Any, context: Context) -> AsyncIterator[Any]:
            outcome = await _begin(method, context, self._keys, meter)
            try:
                sent = None if meter is None else meter.sent
                responses = behaviour(_checked(request, request_streaming, meter), context)
                with self._watching(outcome) as watch:
                    async for response in responses if watch is None else watch.guard(responses):
                        if sent is not None:
                            sent()  # counted as handed to gRPC: a client leaving at the yield got it sent
                        yield response
            except BaseException as error:
                await _fail(outcome, error, context)
                raise
            finally:
                _finish(outcome, context, self._stream_log)

        return serve


class _Malformed:
    """A request message that did not parse; the behaviour's wrapper answers it with INVALID_ARGUMENT."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """Wrap a deserializer so a malformed message reaches the wrapper instead of failing as UNKNOWN."""

    def parse_or_mark(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as error:
            return _Malformed(str(error))

    return parse_or_mark


def _checked(request: Any, request_streaming: bool, meter: RpcMeter | None) -> Any:
    """Return the request, raising InvalidArgument for a malformed one; streams are checked per message."""
    if request_streaming:
        return _checked_stream(request, None if meter is None else meter.received)
    if isinstance(request, _Malformed):
        raise InvalidArgument("request", f"malformed message: {request.reason}")
    return request


async def _checked_stream(
    requests: AsyncIterator[Any], received: Callable[[], None] | None
) -> AsyncIterator[Any]:
    async for request in requests:
        if received is not None:
            received()
        if isinstance(request, _Malformed):
            raise InvalidArgument("request", f"malformed message: {request.reason}")
        yield request


_request_ids = random.Random()
"""Request ids need to be unique, not secret: a seeded generator spares every call a urandom system call."""


async def _begin(method: str, context: Context, keys: KeyRing | None, meter: RpcMeter | None) -> _Outcome:
    started = time.perf_counter()
    if meter is not None:
        meter.start()
    request_id = f"{_request_ids.getrandbits(64):016x}"
    requested: dict[str, str] = {}
    authorizations = 0
    for key, value in context.invocation_metadata() or ():
        authorizations += key == AUTHORIZATION_METADATA
        if key in (NAMESPACE_METADATA, PRINCIPAL_METADATA, AUTHORIZATION_METADATA) and isinstance(value, str):
            requested.setdefault(key, value)
    try:
        if keys is not None and authorizations > 1:
            # Whichever copy stord read, a proxy in front may have checked another: refuse the ambiguity.
            raise _Refused(StatusCode.UNAUTHENTICATED, "send exactly one authorization value")
        api_key = None
        if keys is None:
            call = Call(
                request_id=request_id,
                method=method,
                namespace=resolve_namespace(requested.get(NAMESPACE_METADATA)),
                principal=resolve_principal(requested.get(PRINCIPAL_METADATA)),
            )
        else:
            call, api_key = _authenticated_call(request_id, method, requested, keys)
    except _Refused as refusal:
        _log.info(
            "rpc", method=method, status=refusal.status.name, request_id=request_id, error=refusal.reason
        )
        if meter is not None:
            meter.observe(refusal.status, time.perf_counter() - started)
        await context.abort(refusal.status, refusal.reason)
    except InvalidArgument as error:
        _log.info("rpc", method=method, status="INVALID_ARGUMENT", request_id=request_id, error=str(error))
        if meter is not None:
            meter.observe(StatusCode.INVALID_ARGUMENT, time.perf_counter() - started)
        await context.abort(StatusCode.INVALID_ARGUMENT, str(error))
    current_call.set(call)
    return _Outcome(call, started, meter, api_key)


class _Refused(Exception):
    """The caller may not make this call; the reason names neither the key nor its hash."""

    def __init__(self, status: StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _authenticated_call(
    request_id: str, method: str, requested: dict[str, str], keys: KeyRing
) -> tuple[Call, ApiKey]:
    """Return the Call of a request that presents a key allowed to make it, and the key; or raise _Refused.

    The namespace and principal are the key's; metadata naming another one is refused rather than ignored,
    so a misconfigured client fails loudly instead of reading a namespace it did not mean.
    """
    key = keys.authenticate(requested.get(AUTHORIZATION_METADATA))
    if key is None:
        raise _Refused(StatusCode.UNAUTHENTICATED, "a valid API key is required: authorization: Bearer <key>")
    if not permits(key.role, method):
        raise _Refused(StatusCode.PERMISSION_DENIED, f"a {key.role.value} key may not call {method}")
    for name, own in ((NAMESPACE_METADATA, key.namespace), (PRINCIPAL_METADATA, key.principal)):
        claimed = requested.get(name)
        if claimed is not None and claimed != own:
            raise _Refused(StatusCode.PERMISSION_DENIED, f"{name} differs from the API key's; omit it")
    return Call(request_id=request_id, method=method, namespace=key.namespace, principal=key.principal), key


async def _fail(outcome: _Outcome, error: BaseException, context: Context) -> None:
    """Record how the RPC failed; abort with the mapped status unless gRPC already knows it."""
    if isinstance(error, StoreError):
        outcome.status = status_for(error)
        if outcome.status is StatusCode.UNAVAILABLE:
            _log.warning("backend_unavailable", method=outcome.call.method, error=str(error))
        await context.abort(outcome.status, str(error))
    elif isinstance(error, Revoked):
        outcome.status = error.status
        _log.info("rpc_revoked", method=outcome.call.method, request_id=outcome.call.request_id)
        await context.abort(error.status, error.reason)
    elif isinstance(error, (grpc.aio.AbortError, GeneratorExit)):
        pass  # a servicer aborted with its own status, or a client went away from a stream
    elif isinstance(error, Exception):
        outcome.status = StatusCode.INTERNAL
        if outcome.meter is not None:
            outcome.meter.internal_error()
        _log.error(
            "rpc_failed", method=outcome.call.method, request_id=outcome.call.request_id, exc_info=error
        )
        await context.abort(StatusCode.INTERNAL, f"internal error; request id {outcome.call.request_id}")
    else:
        outcome.status = StatusCode.CANCELLED


def _finish(outcome: _Outcome, context: Context, access_log: AccessLog) -> None:
    code = context.code()
    status = outcome.status if outcome.status is not StatusCode.OK or code is None else code
    call = outcome.call
    elapsed = time.perf_counter() - outcome.started
    if outcome.meter is not None:
        outcome.meter.observe(status, elapsed)
    if not access_log.wants(status is StatusCode.OK, elapsed):
        return
    _log.info(
        "rpc",
        method=call.method,
        status=status.name if isinstance(status, StatusCode) else str(status),
        duration_ms=round(elapsed * 1000, 3),
        request_id=call.request_id,
        namespace=call.namespace,
    )

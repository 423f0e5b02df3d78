"""A bare grpc.aio server answering CacheService Get and Set with fixed responses: the floor under stord.

It parses each request and serializes a response with the same generated code as stord, on one event loop in
a process of its own, without interceptors, logging or a backend, so the same client measures it exactly as
it measures stord. `python -m bench._echo PORT` serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc

from stord.client import Client, StordError
from stord.v1 import kv_pb2
from tests.harness._system import free_port

__all__ = ["EchoServer"]

_SERVICE = "stord.v1.CacheService"
_START_TIMEOUT = 15.0


async def _get(request: kv_pb2.CacheServiceGetRequest, context: Any) -> kv_pb2.CacheServiceGetResponse:
    return kv_pb2.CacheServiceGetResponse(found=True, value=bytes(range(100)))


async def _set(request: kv_pb2.CacheServiceSetRequest, context: Any) -> kv_pb2.CacheServiceSetResponse:
    return kv_pb2.CacheServiceSetResponse(written=True)


async def _serve(port: int) -> None:
    server = grpc.aio.server()
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Get": grpc.unary_unary_rpc_method_handler(
            _get,
            request_deserializer=kv_pb2.CacheServiceGetRequest.FromString,
            response_serializer=kv_pb2.CacheServiceGetResponse.SerializeToString,
        ),
        "Set": grpc.unary_unary_rpc_method_handler(
            _set,
            request_deserializer=kv_pb2.CacheServiceSetRequest.FromString,
            response_serializer=kv_pb2.CacheServiceSetResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_SERVICE, handlers)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(None)


class EchoServer:
    """The echo server as a subprocess; a context manager stops it."""

    def __init__(self) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        port = self.address.rpartition(":")[2]
        self._process = subprocess.Popen([sys.executable, "-m", "bench._echo", port], start_new_session=True)

    @classmethod
    @contextlib.contextmanager
    def serving(cls) -> Iterator[EchoServer]:
        server = cls()
        try:
            server._wait_serving()
            yield server
        finally:
            server._process.send_signal(signal.SIGTERM)
            try:
                server._process.wait(10)
            except subprocess.TimeoutExpired:
                server._process.kill()
                server._process.wait()

    @property
    def pid(self) -> int:
        return self._process.pid

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the echo server exited with status {self._process.returncode}")
            with contextlib.suppress(StordError), Client(self.address, timeout=1) as client:
                client.cache.get("ready")
                return
            time.sleep(0.1)
        raise RuntimeError(f"the echo server did not answer within {_START_TIMEOUT:.0f} s")


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))

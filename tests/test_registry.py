"""A contract the configured backend does not serve answers UNIMPLEMENTED with the reason."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from stord.server.rpc.registry import UnservedService
from stord.v1 import kv_pb2, kv_pb2_grpc


def test_unserved_service_refuses_every_method_with_the_reason() -> None:
    async def call() -> grpc.aio.AioRpcError:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            [UnservedService("stord.v1.CacheService", "redis does not serve this")]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as failure:
                    await kv_pb2_grpc.CacheServiceStub(channel).Keys(kv_pb2.CacheServiceKeysRequest())
                return failure.value
        finally:
            await server.stop(0)

    error = asyncio.run(call())
    assert error.code() is grpc.StatusCode.UNIMPLEMENTED
    assert error.details() == "redis does not serve this"

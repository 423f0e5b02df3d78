"""The link settings reach the sockets: keepalives and TCP_USER_TIMEOUT on PostgreSQL and Redis links."""

from __future__ import annotations

import asyncio
import socket

import psycopg
from redis.asyncio.connection import Connection as RedisConnection

from stord.server.backends.postgres._pool import Pool, link_settings, with_keepalives
from stord.server.backends.redis import RedisBackend
from stord.server.config import PostgresOptions, RedisOptions
from tests.harness.postgres import PostgresServer
from tests.harness.redis import RedisServer


def _tcp_options(sock: socket.socket) -> tuple[int, int, int, int, int]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    )


def test_postgres_pool_connections_carry_the_link_settings(postgres_server: PostgresServer) -> None:
    options = PostgresOptions(
        statement_timeout=12.5,
        tcp_user_timeout=2.5,
        keepalive_idle=7,
        keepalive_interval=2,
        keepalive_count=4,
    )

    async def scenario() -> tuple[tuple[int, int, int, int, int], str]:
        pool = Pool(postgres_server.url("postgres"), options)
        await pool.open()
        try:
            async with pool.connection() as connection:
                # A duplicate of the connection's socket: getsockopt reads the shared kernel socket.
                with socket.socket(fileno=socket.dup(connection.pgconn.socket)) as sock:
                    tcp = _tcp_options(sock)
                cursor = await connection.execute("SHOW statement_timeout")
                row = await cursor.fetchone()
                assert row is not None
                return tcp, str(row[0])
        finally:
            await pool.close()

    tcp, statement_timeout = asyncio.run(scenario())
    assert tcp == (1, 7, 2, 4, 2500)
    assert statement_timeout == "12500ms"


def test_the_statement_timeout_joins_the_urls_own_options() -> None:
    options = PostgresOptions(statement_timeout=4)
    url = "postgresql://stord@db.internal/stord?options=-c%20search_path%3Dpublic"
    assert link_settings(url, options)["options"] == "-c search_path=public -c statement_timeout=4000"
    assert link_settings("postgresql://stord@db/stord", options)["options"] == "-c statement_timeout=4000"
    assert "options" not in link_settings(url, PostgresOptions(statement_timeout=0))


def test_listen_connections_get_keepalives_in_their_url(postgres_server: PostgresServer) -> None:
    options = PostgresOptions(tcp_user_timeout=2, keepalive_idle=8)
    url = with_keepalives(f"{postgres_server.url('postgres')}?options=-c%20search_path%3Dpublic", options)
    assert "keepalives_idle=8" in url
    assert "statement_timeout" not in url  # a LISTEN connection waits on purpose

    async def scenario() -> tuple[tuple[int, int, int, int, int], str]:
        connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
        async with connection:
            with socket.socket(fileno=socket.dup(connection.pgconn.socket)) as sock:
                tcp = _tcp_options(sock)
            cursor = await connection.execute("SHOW search_path")
            row = await cursor.fetchone()
            assert row is not None
            return tcp, str(row[0])

    assert asyncio.run(scenario()) == ((1, 8, 1, 3, 2000), "public")


def test_redis_connections_carry_the_link_settings(redis_server: RedisServer) -> None:
    options = RedisOptions(tcp_user_timeout=1.5, keepalive_idle=6, keepalive_interval=3, keepalive_count=5)

    async def scenario() -> tuple[int, int, int, int, int]:
        backend = RedisBackend(redis_server.url, options=options)
        await backend.open()
        try:
            pool = backend._client().connection_pool
            connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            try:
                assert isinstance(connection, RedisConnection)
                sock = connection._writer.get_extra_info("socket") if connection._writer else None
                assert sock is not None
                return _tcp_options(sock)
            finally:
                await pool.release(connection)
        finally:
            await backend.close()

    assert asyncio.run(scenario()) == (1, 6, 3, 5, 1500)

"""The connection pool every PostgreSQL store shares, and how it rides out a server that goes away.

psycopg_pool alone serves a daemon badly when the server goes away: idle connections to a dead server are
lent out as if they worked, a request waits the whole pool timeout for a connection that cannot come (past a
client's deadline), and the pool reconnects with a backoff that doubles up to minutes, so it may wait long
after the server is back. So the first sign of a lost server (a broken connection, no connection in time)
starts one recovery task here, which connects afresh:

- if that works, the server is there (it restarted while connections sat idle, or one connection broke):
  the pool's broken idle connections are dropped (`AsyncConnectionPool.check`) and nothing else changes;
- if not, the server is unreachable (stopped, or silent behind a partition): the pool is closed at once (its
  waiting requests fail with Unavailable; lent connections close as they come back), every request fails at
  once with Unavailable naming the cause,
  and the task probes again every 50 ms to 1 s; once a probe connects, a fresh pool takes over.

A partition drops packets without a word, so a statement on a connection to a silent server just waits: the
connections' TCP keepalives and `tcp_user_timeout` (`link_settings`) bound how long it is taken for a live
one, and its failure then starts the recovery like any broken connection.

Checking every connection as it is lent (`check=` on the pool) would catch stale ones before use too, but
costs a round trip per request (about 150 us here, as much as the rest of a simple RPC's database work).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import structlog
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from stord.server.backends.postgres._errors import UNREACHABLE, translate_errors
from stord.server.backends.postgres._migrate import connect_alone, connect_timeout_seconds
from stord.server.config import PostgresOptions, redact_url
from stord.server.ports import Unavailable

Connection = AsyncConnection[TupleRow]

_log = structlog.get_logger("stord.postgres")

_PROBE_FIRST_DELAY = 0.05
_PROBE_MAX_DELAY = 1.0
"""Bounds of the pause between two probes of an unreachable server: it is found again within a second."""

_RETIRE_TIMEOUT = 5.0
"""Seconds a closed pool's maintenance workers get to finish."""


class Pool:
    """The connection pool every store of one backend shares; created and opened by `open`."""

    def __init__(self, url: str, options: PostgresOptions) -> None:
        self._url = url
        self._where = redact_url(url)
        self._options = options
        self._pool: AsyncConnectionPool[Connection] | None = None
        """The pool in use; None before `open`, after `close`, and while the server is unreachable."""
        self._opening: AsyncConnectionPool[Connection] | None = None
        """A pool the recovery task is opening, so that `close` closes it too."""
        self._unreachable: str | None = None
        """Why the server is unreachable (the last probe's error); None while it answers."""
        self._recovery: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    def usage(self) -> tuple[int, int, int] | None:
        """Return the connections open, those lent out, and the requests waiting; None without a pool.

        Read by the metrics endpoint's thread: plain reads of the pool's counters.
        """
        pool = self._pool
        if pool is None:
            return None
        stats = pool.get_stats()
        size = stats.get("pool_size", 0)
        return size, size - stats.get("pool_available", 0), stats.get("requests_waiting", 0)

    async def _open_pool(self) -> AsyncConnectionPool[Connection]:
        """Return a new pool holding its first connections; raise what connecting raised otherwise."""
        options = self._options
        # Connections run in autocommit: a single statement is its own transaction and the stores open
        # explicit transactions only where several statements must hold together.
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self._url,
            min_size=options.pool_min_size,
            max_size=max(options.pool_max_size, options.pool_min_size),
            open=False,
            timeout=options.connect_timeout,
            name="stord",
            kwargs={
                "autocommit": True,
                "connect_timeout": connect_timeout_seconds(options.connect_timeout),
                "application_name": "stord",
                **link_settings(self._url, options),
            },
        )
        self._opening = pool
        try:
            await pool.open(wait=True, timeout=options.connect_timeout)
        except BaseException:
            await pool.close()
            raise
        finally:
            self._opening = None
        return pool

    async def open(self) -> None:
        """Open the pool and wait for its first connections; raise Unavailable when they do not come."""
        if self._pool is not None:
            return
        try:
            self._pool = await self._open_pool()
        except UNREACHABLE as error:
            within = f"{self._options.connect_timeout:g} s"
            raise Unavailable(f"cannot reach PostgreSQL at {self._where} within {within}: {error}") from error

    async def close(self) -> None:
        """Close every connection; safe to call more than once."""
        recovery, self._recovery = self._recovery, None
        if recovery is not None:
            recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recovery
        pools = [pool for pool in (self._pool, self._opening) if pool is not None]
        self._pool = self._opening = None
        self._unreachable = None
        for pool in pools:
            await pool.close()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """Lend a connection, raising Unavailable when the pool is closed or the server unreachable."""
        pool = self._pool
        if pool is None:
            if self._unreachable is not None:
                raise Unavailable(f"PostgreSQL at {self._where} is unreachable: {self._unreachable}")
            raise Unavailable(f"the PostgreSQL backend at {self._where} is not open")
        lent: Connection | None = None
        try:
            with translate_errors():
                async with pool.connection() as connection:
                    lent = connection
                    yield connection
        except Unavailable as error:
            if isinstance(error.__cause__, PoolTimeout) or (lent is not None and lent.broken):
                self._suspect()
            raise

    def _suspect(self) -> None:
        """Start finding out whether the server is reachable, unless that is under way."""
        if self._pool is not None and (self._recovery is None or self._recovery.done()):
            self._recovery = asyncio.create_task(self._recover(), name="stord-postgres-recovery")

    async def _recover(self) -> None:
        """Probe the server; while it is unreachable, fail fast and probe on; then serve from a fresh pool."""
        delay = _PROBE_FIRST_DELAY
        while True:
            try:
                await self._probe()
                fresh = None if self._unreachable is None else await self._open_pool()
            except Exception as error:  # whatever the reason, the server does not serve: probe again
                self._unreachable = _reason(error)
                stale, self._pool = self._pool, None
                if stale is not None:
                    _log.warning("postgres_unreachable", url=self._where, error=self._unreachable)
                    self._retire(stale)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _PROBE_MAX_DELAY)
                continue
            if fresh is None:
                if self._pool is not None:
                    try:
                        await self._pool.check()
                    except Exception:  # the next broken connection starts another recovery
                        _log.exception("postgres_pool_check_failed", url=self._where)
                return
            self._pool, self._unreachable = fresh, None
            _log.info("postgres_reachable", url=self._where)
            return

    async def _probe(self) -> None:
        # Bounded as a whole: a link that goes silent between connecting and the answer must not stall it.
        async with asyncio.timeout(connect_timeout_seconds(self._options.connect_timeout) + 1):
            connection = await connect_alone(
                self._url, connect_timeout=self._options.connect_timeout, application_name="stord-probe"
            )
            async with connection:
                await connection.execute("SELECT 1")

    def _retire(self, pool: AsyncConnectionPool[Connection]) -> None:
        """Close a pool in the background: its waiting requests fail now, lent connections close on return."""
        task = asyncio.create_task(pool.close(timeout=_RETIRE_TIMEOUT), name="stord-postgres-retire")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


def with_keepalives(url: str, options: PostgresOptions) -> str:
    """Return `url` with the keepalive and `tcp_user_timeout` parameters of `link_settings` added.

    For the connections opened outside the pool (the LISTEN connections of jobs and events), which are given
    a URL only. Parameters the URL sets already stay as they are.
    """
    parts = urlsplit(url)
    given = dict(parse_qsl(parts.query, keep_blank_values=True))
    added = {
        name: str(value)
        for name, value in link_settings(url, options.model_copy(update={"statement_timeout": 0})).items()
        if name not in given
    }
    # libpq decodes %XX only, not + for a space: quote, do not quote_plus.
    return urlunsplit(parts._replace(query=urlencode({**given, **added}, quote_via=quote)))


def link_settings(url: str, options: PostgresOptions) -> dict[str, str | int]:
    """Return the libpq parameters that bound how long a connection waits on a server that went silent.

    Without them a partition (packets dropped, nothing refused) leaves a query waiting for the kernel's
    retransmissions, about 15 minutes on Linux, and an idle pooled connection looking alive for hours. The
    statement timeout joins the URL's own `options`, which these parameters would otherwise replace.
    """
    settings: dict[str, str | int] = {
        "keepalives": 1,
        "keepalives_idle": options.keepalive_idle,
        "keepalives_interval": options.keepalive_interval,
        "keepalives_count": options.keepalive_count,
    }
    if options.tcp_user_timeout > 0:
        settings["tcp_user_timeout"] = round(options.tcp_user_timeout * 1000)
    if options.statement_timeout > 0:
        given = str(conninfo_to_dict(url).get("options") or "")
        timeout = f"-c statement_timeout={round(options.statement_timeout * 1000)}"
        settings["options"] = f"{given} {timeout}".strip()
    return settings


def _reason(error: BaseException) -> str:
    """Return the first line of a connection error (libpq's messages run over several lines)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

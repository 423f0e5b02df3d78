"""The SQLite engine all SQLite stores share (DESIGN 3): one writer thread with group commit, pooled readers.

A store never touches a connection outside the callables it hands to `SqliteEngine.write` and
`SqliteEngine.read`. Writes run one after another on the single writer connection; the writer thread takes
every write already queued (up to `max_group`), runs each inside its own SAVEPOINT and commits the group once,
so concurrent RPCs share one COMMIT. A write's awaiter resumes only after that COMMIT returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from stord.server.backends.sqlite._connect import (
    BUSY_CODES,
    FREE_BYTES_FOR_WRITES,
    apply_migrations,
    connect,
    free_bytes,
    read_only_file_system,
    rewrite_user_version,
    translate_error,
    translated_errors,
    write_blocked,
)
from stord.server.config import SqliteOptions
from stord.server.ports import StoreError, Unavailable
from stord.server.schema import Migration, load_migrations

__all__ = ["SqliteEngine"]

_T = TypeVar("_T")

_log = structlog.get_logger("stord.sqlite")

LOOKUP_BUSY_TIMEOUT_MS = 20
"""How long an inline lookup may wait for a busy file before it moves to the reader pool."""

MAX_GROUP = 256
"""Most writes committed together; a bound keeps one group's latency and memory small."""


@dataclass(slots=True)
class _Write:
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


_Outcome = tuple[_Write, Any, BaseException | None]
_Settled = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle(settled: list[_Settled]) -> None:
    for future, result, error in settled:
        if future.done():  # its awaiter was cancelled; the write happened anyway
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class SqliteEngine:
    """One SQLite file: a writer thread committing queued writes in groups, and a pool of reader threads.

    `write(fn)` and `read(fn)` run `fn(connection)` in an engine thread and return its result. `fn` runs
    synchronously in that thread: it must not touch the event loop, and must not BEGIN, COMMIT or ROLLBACK
    (the engine owns transactions). A write that raises is rolled back alone and its caller gets the
    exception; SQLite errors about locks, the disk or the file arrive as Unavailable, others unchanged.
    """

    def __init__(
        self,
        path: Path,
        *,
        options: SqliteOptions,
        migrations: Sequence[Migration] | None = None,
        max_group: int = MAX_GROUP,
    ) -> None:
        self._path = path
        self._options = options
        self._migrations = migrations
        self._max_group = max_group
        self._state = _State.NEW
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer_done: concurrent.futures.Future[None] | None = None
        self._writer: threading.Thread | None = None
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader_local = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._lookup_connection: sqlite3.Connection | None = None
        self._closing: asyncio.Task[None] | None = None
        self.applied_migrations: list[int] = []
        """Versions the last `open()` applied."""
        self.commits = 0
        """Groups committed since construction (the writer thread counts; read it for tests and metrics)."""
        self.writes = 0
        """Writes that committed since construction."""
        self._write_failure: str | None = None
        """Why writes fail (the disk is full or read-only) until the health check finds them working again."""

    @property
    def path(self) -> Path:
        return self._path

    @property
    def queued_writes(self) -> int:
        """Return how many writes wait for the writer thread (approximate; read from any thread)."""
        return self._queue.qsize()

    async def open(self) -> None:
        """Create the file and its directory when missing, apply migrations, start the threads."""
        if self._state is _State.OPEN:
            return
        if self._closing is not None:
            await asyncio.shield(self._closing)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise Unavailable(
                f"cannot create the directory of SQLite database {self._path}: {error}"
            ) from error
        migrations = load_migrations("sqlite") if self._migrations is None else self._migrations
        self._queue = queue.SimpleQueue()
        ready: concurrent.futures.Future[list[int]] = concurrent.futures.Future()
        self._writer_done = concurrent.futures.Future()
        self._writer = threading.Thread(
            target=self._writer_main,
            args=(self._queue, migrations, ready, self._writer_done),
            name="stord-sqlite-writer",
            daemon=True,
        )
        self._writer.start()
        try:
            self.applied_migrations = await asyncio.wrap_future(ready)
        except BaseException:
            await asyncio.wrap_future(self._writer_done)
            raise
        self._reader_local = threading.local()
        self._readers = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._options.readers, thread_name_prefix="stord-sqlite-reader"
        )
        self._state = _State.OPEN
        self._closing = None
        try:
            await self.check()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Commit what is queued, stop the threads and close every connection; safe to call twice."""
        if self._closing is None:
            if self._state is not _State.OPEN:
                self._state = _State.CLOSED
                return
            self._state = _State.CLOSING
            self._closing = asyncio.create_task(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._queue.put(None)
        if self._writer_done is not None:
            await asyncio.wrap_future(self._writer_done)
        readers, self._readers = self._readers, None
        if readers is not None:
            await asyncio.to_thread(readers.shutdown, wait=True)
        with self._reader_lock:
            connections, self._reader_connections = self._reader_connections, []
        lookup, self._lookup_connection = self._lookup_connection, None
        if lookup is not None:
            connections.append(lookup)
        for connection in connections:
            connection.close()
        self._state = _State.CLOSED

    async def check(self) -> None:
        """Raise Unavailable unless the writer thread runs, a reader answers, and writes are not failing.

        Once a write failed for a full or read-only disk, writes count as failing until the file system
        is writable and has `FREE_BYTES_FOR_WRITES` available again, and a write of one page (the schema's
        user_version, set to what it is) commits. A small write may fit on a disk that refuses larger ones,
        so a client's write that commits meanwhile does not count.
        """
        self._ensure_open()
        if self._writer is None or not self._writer.is_alive():
            raise Unavailable(f"SQLite database {self._path}: the writer thread is not running")
        await self.read(lambda connection: connection.execute("SELECT 1").fetchone())
        failure = self._write_failure
        if failure is None:
            return
        if read_only_file_system(self._path) or free_bytes(self._path) < FREE_BYTES_FOR_WRITES:
            raise Unavailable(f"SQLite database {self._path}: {failure}")
        try:
            await self.write(rewrite_user_version)
        except StoreError as error:
            raise Unavailable(str(error)) from error
        _log.info("sqlite_writes_succeed_again", path=str(self._path))
        self._write_failure = None

    def _writes_fail(self, reason: str) -> None:
        if self._write_failure is None:
            _log.warning("sqlite_writes_failing", path=str(self._path), reason=reason)
        self._write_failure = reason

    def _ensure_open(self) -> None:
        if self._state is not _State.OPEN:
            raise Unavailable(f"SQLite database {self._path} is {self._state.value}")

    async def write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `fn` on the writer connection in the next group; return once the group committed."""
        self._ensure_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._queue.put(_Write(fn, loop, future))
        return await future

    async def lookup(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a short, index-bounded read on the event loop's own connection; return its result.

        A thread hop costs more than a primary-key lookup (about 200 us of CPU against 10 us), so bounded
        reads run inline. In WAL mode readers do not wait for the writer; if the file is busy all the same
        (a checkpoint restarting the WAL), the read moves to the reader pool instead of stalling the loop.
        Anything that may scan belongs in `read`.
        """
        self._ensure_open()
        connection = self._lookup_connection
        if connection is None:
            connection = self._lookup_connection = connect(
                self._path, self._options, reader=True, busy_timeout_ms=LOOKUP_BUSY_TIMEOUT_MS
            )
        try:
            with translated_errors(self._path):
                connection.execute("BEGIN")
                try:
                    return fn(connection)
                finally:
                    connection.execute("COMMIT")
        except Unavailable as error:
            if getattr(error.__cause__, "sqlite_errorcode", 0) & 0xFF not in BUSY_CODES:
                raise
            if connection.in_transaction:
                connection.execute("ROLLBACK")
        return await self.read(fn)

    async def read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `fn` on a reader connection inside one read transaction (one snapshot); return its result."""
        self._ensure_open()
        assert self._readers is not None
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._read_in_thread, fn)

    # Reader threads.

    def _read_in_thread(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        with translated_errors(self._path):
            connection: sqlite3.Connection | None = getattr(self._reader_local, "connection", None)
            if connection is None:
                connection = connect(self._path, self._options, reader=True)
                self._reader_local.connection = connection
                with self._reader_lock:
                    self._reader_connections.append(connection)
            if connection.in_transaction:  # a read whose COMMIT failed left it open
                connection.execute("ROLLBACK")
            connection.execute("BEGIN")
            try:
                return fn(connection)
            finally:
                connection.execute("COMMIT")

    # The writer thread.

    def _writer_main(
        self,
        writes: queue.SimpleQueue[_Write | None],
        migrations: Sequence[Migration],
        ready: concurrent.futures.Future[list[int]],
        done: concurrent.futures.Future[None],
    ) -> None:
        try:
            try:
                connection = connect(self._path, self._options)
            except Exception as error:
                ready.set_exception(translate_error(self._path, error))
                return
            try:
                try:
                    applied = apply_migrations(connection, migrations)
                except Exception as error:
                    ready.set_exception(translate_error(self._path, error))
                    return
                ready.set_result(applied)
                self._serve(connection, writes)
            finally:
                connection.close()
        finally:
            self._fail_queued(writes)
            done.set_result(None)

    def _serve(self, connection: sqlite3.Connection, writes: queue.SimpleQueue[_Write | None]) -> None:
        while True:
            first = writes.get()
            if first is None:
                return
            group = [first]
            stop = False
            while len(group) < self._max_group:
                try:
                    item = writes.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
            self._resolve(self._commit_group(connection, group))
            if stop:
                return

    def _commit_group(self, connection: sqlite3.Connection, group: list[_Write]) -> list[_Outcome]:
        """Run each write in its own savepoint, COMMIT once, and return every write's outcome."""
        outcomes = self._run_group(connection, group)
        for _, _, error in outcomes:
            reason = None if error is None else write_blocked(self._path, error.__cause__)
            if reason is not None:
                self._writes_fail(reason)
                break
        return outcomes

    def _run_group(self, connection: sqlite3.Connection, group: list[_Write]) -> list[_Outcome]:
        outcomes: list[_Outcome | None] = [None] * len(group)
        pending: list[int] = []  # ran without error; wait for the COMMIT
        try:
            for index, write in enumerate(group):
                if not connection.in_transaction:
                    connection.execute("BEGIN IMMEDIATE")
                connection.execute("SAVEPOINT stord_write")
                try:
                    result = write.fn(connection)
                except BaseException as error:
                    outcomes[index] = (write, None, translate_error(self._path, error))
                    if connection.in_transaction:
                        connection.execute("ROLLBACK TO stord_write")
                        connection.execute("RELEASE stord_write")
                    else:
                        # SQLite rolled the whole transaction back (an I/O error, a full disk): the earlier
                        # writes of this group are gone too.
                        for earlier in pending:
                            outcomes[earlier] = (group[earlier], None, self._lost(error))
                        pending.clear()
                else:
                    connection.execute("RELEASE stord_write")
                    outcomes[index] = (write, result, None)
                    pending.append(index)
            if connection.in_transaction:
                connection.execute("COMMIT")
                self.commits += 1
                self.writes += len(pending)
        except Exception as error:
            # BEGIN, SAVEPOINT, ROLLBACK TO, RELEASE or COMMIT failed: nothing of this group is committed, and
            # the writes that did not run yet are failed rather than retried.
            if connection.in_transaction:
                try:
                    connection.execute("ROLLBACK")
                except sqlite3.Error:
                    _log.exception("sqlite_rollback_failed", path=str(self._path))
            uncommitted = set(pending)
            for position, write in enumerate(group):
                if outcomes[position] is None or position in uncommitted:
                    outcomes[position] = (write, None, self._lost(error))
        return [outcome for outcome in outcomes if outcome is not None]

    def _lost(self, error: BaseException) -> BaseException:
        translated = translate_error(self._path, error)
        if translated is error:
            translated = Unavailable(f"SQLite database {self._path}: the write's transaction failed: {error}")
            translated.__cause__ = error
        return translated

    def _resolve(self, outcomes: list[_Outcome]) -> None:
        # One wake-up per event loop for the whole group, not one per write.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
        for write, result, error in outcomes:
            by_loop.setdefault(write.loop, []).append((write.future, result, error))
        for loop, settled in by_loop.items():
            # RuntimeError: that loop is closed, so nobody awaits these writes any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, settled)

    def _fail_queued(self, writes: queue.SimpleQueue[_Write | None]) -> None:
        left: list[_Write] = []
        while True:
            try:
                item = writes.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                left.append(item)
        if left:
            error = f"SQLite database {self._path} closed before the write ran"
            self._resolve([(write, None, Unavailable(error)) for write in left])

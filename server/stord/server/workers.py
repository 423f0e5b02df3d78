"""`stord serve --workers N`: N server processes on one TCP port (SO_REUSEPORT), under a supervisor.

One Python process serves a few thousand RPCs per second on one core; N workers let the kernel spread
connections over N processes (each connection stays with the process that accepted it). The supervisor:

- checks that nothing listens on the port yet: the workers bind it with SO_REUSEPORT, which would silently
  share it with another process of this user that did the same;
- applies the schema migrations once, so that the workers start on an up-to-date schema without racing;
- starts the workers with the `spawn` method (a fork would copy gRPC's threads and state) and waits until
  each one serves;
- forwards SIGTERM, SIGINT (both: drain and stop) and SIGHUP (reload API keys) to every worker;
- when a worker dies on its own, stops the others and exits 1, so that whatever runs stord (systemd,
  Kubernetes, Docker) restarts it whole, rather than running with fewer workers unnoticed or restarting a
  worker in a loop. A worker whose supervisor is gone (killed) drains and stops as on SIGTERM.

Settings validation refuses what cannot be shared: a memory database or cache (each process would have its
own), and a Unix socket (one process only can listen on it). The fallback to memory of an unreachable backend
is turned off for the same reason: a worker that cannot reach a backend stops startup. Metrics: worker i
serves on the metrics port + i (all of them logged), so Prometheus scrapes each worker as its own target.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event
from types import FrameType

import structlog

from stord.server.config import Settings, redact_url
from stord.server.logs import configure_logging
from stord.server.rpc.listen import ListenError, check_port_free, join_address

__all__ = ["serve_workers"]

EXIT_OK = 0
EXIT_FAILURE = 1

START_TIMEOUT = 120.0
"""Seconds every worker gets to open its backends and serve (each retries unreachable backends itself)."""
STOP_TIMEOUT_MARGIN = 15.0
"""Seconds a worker gets beyond the grace period to finish stopping before it is killed."""

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_STOPPED = {0, -signal.SIGTERM, -signal.SIGINT}
"""Exit codes of a worker that stopped when told to (a signal during its startup ends it at once)."""

_log = structlog.get_logger("stord")


class _StartupFailed(Exception):
    """The workers cannot be started; the message says why."""


def serve_workers(settings: Settings) -> int:
    """Run `settings.workers` worker processes until SIGTERM or SIGINT; return the exit status."""
    try:
        listen = check_port_free(settings.listen)
        _migrate(settings)
    except (ListenError, _StartupFailed) as error:
        _log.error("startup_failed", error=str(error))
        return EXIT_FAILURE
    return _Supervisor(settings, listen).run()


def _migrate(settings: Settings) -> None:
    """Bring the database schema up to date once, before any worker opens it."""
    from stord.server.backends import create_backend, open_with_retry
    from stord.server.ports import Unavailable

    url = settings.database_url

    async def run() -> None:
        backend = create_backend(url, settings)
        try:
            await open_with_retry(backend, url, "database", settings.connect)  # opening migrates
        finally:
            await backend.close()

    try:
        asyncio.run(run())
    except Unavailable as error:
        raise _StartupFailed(f"database backend {redact_url(url)} is unreachable: {error}") from None


def _worker_settings(settings: Settings, listen: str, index: int) -> Settings:
    """A worker's settings: the fixed port, its own metrics port, no fallback to a per-process memory."""
    connect = settings.connect.model_copy(update={"cache_fallback": False, "database_fallback": False})
    update: dict[str, object] = {"listen": listen, "connect": connect}
    metrics = settings.metrics_address
    if metrics is not None and metrics[1] != 0:
        update["metrics_listen"] = join_address(metrics[0], metrics[1] + index)
    return settings.model_copy(update=update)


def _worker_main(settings: Settings, index: int, ready: Event) -> None:
    """A worker process: one Daemon on the shared port, its log lines marked with its index and pid.

    Until the daemon handles signals, SIGTERM and SIGINT end the worker at once (there is nothing to drain
    yet) and SIGHUP is ignored (the daemon reads the keys file when it starts anyway).
    """
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _stop_with_supervisor()
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    structlog.contextvars.bind_contextvars(worker=index, pid=os.getpid())
    from stord.server.app import Daemon, StartupError

    try:
        asyncio.run(Daemon(settings, reuse_port=True).serve_until_signalled(ready=ready.set))
    except StartupError as error:
        structlog.get_logger("stord").error("startup_failed", error=str(error))
        sys.exit(EXIT_FAILURE)


def _stop_with_supervisor() -> None:
    """Drain and stop (SIGTERM to this worker) once the supervisor is gone, even killed: none outlives it."""
    supervisor = multiprocessing.parent_process()
    if supervisor is None:
        return

    def watch() -> None:
        wait([supervisor.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stord-supervisor-watch", daemon=True).start()


class _Supervisor:
    """Starts the workers, forwards signals to them, and stops them all when one dies."""

    def __init__(self, settings: Settings, listen: str) -> None:
        self._settings = settings
        self._listen = listen
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[SpawnProcess] = []
        self._told_to_stop = False
        """SIGTERM or SIGINT arrived: workers exiting now are stopping, not dying."""

    def run(self) -> int:
        previous = {signum: signal.signal(signum, self._forward) for signum in _FORWARDED}
        try:
            if self._start():
                return self._supervise()
            self._stop_all()
            return EXIT_OK if self._told_to_stop else EXIT_FAILURE
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGHUP:
            self._told_to_stop = True
        for worker in self._workers:
            if worker.pid is not None and worker.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signum)

    def _start(self) -> bool:
        """Start every worker and wait until each serves; False when one cannot, or when told to stop."""
        waiting: dict[SpawnProcess, Event] = {}
        for index in range(self._settings.workers):
            ready = self._context.Event()
            settings = _worker_settings(self._settings, self._listen, index)
            worker = self._context.Process(
                target=_worker_main, args=(settings, index, ready), name=f"stord-worker-{index}"
            )
            worker.start()
            self._workers.append(worker)
            waiting[worker] = ready
        deadline = time.monotonic() + START_TIMEOUT
        while waiting and not self._told_to_stop:
            for worker, ready in list(waiting.items()):
                if ready.is_set():
                    del waiting[worker]
                elif worker.exitcode is not None:
                    _log.error("worker_failed_to_start", worker=self._index(worker), exitcode=worker.exitcode)
                    return False
            if time.monotonic() > deadline:
                _log.error("workers_did_not_start", workers=[self._index(worker) for worker in waiting])
                return False
            wait([worker.sentinel for worker in waiting], timeout=0.05)  # readiness is polled, deaths wake
        if self._told_to_stop:
            return False
        _log.info(
            "serving_workers",
            listen=self._listen,
            workers=len(self._workers),
            pids=[worker.pid for worker in self._workers],
            database=redact_url(self._settings.database_url),
        )
        return True

    def _supervise(self) -> int:
        """Wait for the workers to exit; one exiting before we were told to stop stops them all."""
        while running := [worker for worker in self._workers if worker.exitcode is None]:
            ended = wait([worker.sentinel for worker in running])
            exited = [worker for worker in running if worker.sentinel in ended]
            for worker in exited:
                worker.join()  # its sentinel closes as it exits, a moment before its exit code is known
            if self._told_to_stop:
                continue
            for worker in exited:
                _log.error(
                    "worker_died", worker=self._index(worker), pid=worker.pid, exitcode=worker.exitcode
                )
            self._stop_all()
            return EXIT_FAILURE
        failed = [self._index(worker) for worker in self._workers if worker.exitcode not in _STOPPED]
        if failed:
            _log.error("workers_failed", workers=failed)
            return EXIT_FAILURE
        _log.info("stopped_workers", workers=len(self._workers))
        return EXIT_OK

    def _index(self, worker: SpawnProcess) -> int:
        """Return the worker's index, as its own log lines give it (`worker`)."""
        return self._workers.index(worker)

    def _stop_all(self) -> None:
        """SIGTERM every worker still running, let them drain, kill the ones that linger."""
        for worker in self._workers:
            if worker.exitcode is None and worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        timeout = self._settings.grace_period + STOP_TIMEOUT_MARGIN
        for worker in self._workers:
            worker.join(timeout)
            if worker.exitcode is None:
                worker.kill()
                worker.join()

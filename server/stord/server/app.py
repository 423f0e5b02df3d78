"""The daemon: opens the backends, wires services to them, serves, and shuts down in order."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version as distribution_version
from typing import Protocol, runtime_checkable

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from stord.server.admin.service import AdminServicer, BackendStatus
from stord.server.alerts.scheduler import AlertScheduler, PassOutcome, alert_scheduler
from stord.server.backends import create_backend, open_with_retry
from stord.server.backends.memory import MemoryBackend
from stord.server.config import Settings, redact_url
from stord.server.events.retention import retain_events_daily
from stord.server.jobs.port import JobQueueStore, LeaseSweep
from stord.server.jobs.sweeper import JobPurge, purge_finished_jobs, settle_lapsed_leases
from stord.server.logs import access_log_policies
from stord.server.metrics import Metrics, MetricsServer
from stord.server.ports import Backend, Clock, StoreError, Unavailable, Unimplemented, system_clock
from stord.server.rpc.auth import KeyRing, KeysFileError
from stord.server.rpc.interceptors import CallInterceptor
from stord.server.rpc.listen import ListenError, check_port_free
from stord.server.rpc.page_tokens import PageTokens
from stord.server.rpc.registry import CONTRACTS, UnservedService
from stord.server.signals import ignore_signals_until_exit, on_stop_signals
from stord.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["Daemon", "StartupError", "stord_version"]

_log = structlog.get_logger("stord")

ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
OVERALL = ""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

_MIN_CHECK_TIMEOUT = 1.0
"""Seconds a health check may take, however short the interval: a busy machine is not a sick backend."""
_BACKGROUND_STOP_TIMEOUT = 5.0
"""Seconds the periodic tasks get to end once cancelled at shutdown."""


def stord_version() -> str:
    """Return the installed daemon's version."""
    return distribution_version("stord")


class StartupError(Exception):
    """The daemon cannot start; the message says why."""


@runtime_checkable
class _Draining(Protocol):
    """A servicer with streams that would never end by themselves (TailEvents): ended when draining starts."""

    async def drain(self) -> None: ...


class Daemon:
    """One stord server: call `start`, then `stop` (or `serve_until_signalled` to do both)."""

    def __init__(self, settings: Settings, *, clock: Clock = system_clock, reuse_port: bool = False) -> None:
        self._settings = settings
        self._clock = clock
        self._reuse_port = reuse_port
        """Share the TCP port with the other worker processes of `stord serve --workers` (SO_REUSEPORT)."""
        self._server: grpc.aio.Server | None = None
        self._health = HealthServicer()
        self._backends: list[Backend] = []
        self._jobs: JobQueueStore | None = None
        """The database's job queue, whose leases and retention the sweepers look after; None if unserved."""
        self._statuses: dict[Backend, list[BackendStatus]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._unserved: set[str] = set()
        self._draining: list[_Draining] = []
        self._started = time.time()
        self.keys: KeyRing | None = None
        """The API keys in force; None when authentication is off."""
        self.port = 0
        """The bound TCP port, known once started (useful with a listen port of 0)."""
        self.metrics: Metrics | None = None
        """The daemon's metrics; None unless `metrics_listen` is set."""
        self._metrics_server: MetricsServer | None = None
        self.metrics_port = 0
        """The bound port of the metrics endpoint, known once started; 0 when it is off."""
        self.alerts: AlertScheduler | None = None
        """Evaluates the database's alert rules; None when `alert_interval` is 0 or there are no events."""

    async def start(self) -> None:
        """Open the backends and start serving; raise StartupError when that is impossible."""
        settings = self._settings
        self.keys = self._load_keys()
        credentials = self._server_credentials()
        if not self._reuse_port:  # workers share the port their supervisor checked
            try:
                check_port_free(settings.listen)  # before the backends create files or migrate anything
            except ListenError as error:
                raise StartupError(str(error)) from None
        database_url = settings.database_url
        database = await self._open_role(
            "database", database_url, fallback=settings.connect.database_fallback
        )
        if settings.cache == database_url:
            cache = database  # one engine for both roles; the keyspaces keep them apart
            self._statuses[database].append(BackendStatus("cache", database.kind, redact_url(database_url)))
        else:
            cache = await self._open_role("cache", settings.cache, fallback=settings.connect.cache_fallback)
        with contextlib.suppress(Unimplemented):
            self._jobs = database.jobs()

        metrics_address = settings.metrics_address
        metrics = self.metrics = None if metrics_address is None else Metrics(stord_version())
        server = grpc.aio.server(
            interceptors=[CallInterceptor(self.keys, metrics, access_log=access_log_policies(settings))],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                # A second daemon on a taken port must fail, not silently share it; workers share it on
                # purpose, once their supervisor has checked that nothing else listens there.
                ("grpc.so_reuseport", 1 if self._reuse_port else 0),
            ],
        )
        backends = {"database": database, "cache": cache}
        page_tokens = {role: await self._page_tokens(role, backend) for role, backend in backends.items()}
        unserved: list[grpc.GenericRpcHandler] = []
        for contract in CONTRACTS:
            backend = backends[contract.role]
            try:
                servicer = contract.servicer(backend, cache, metrics, settings, page_tokens[contract.role])
                contract.add_to_server(servicer, server)
                if isinstance(servicer, _Draining):
                    self._draining.append(servicer)
            except Unimplemented as error:
                unserved.append(UnservedService(contract.service, str(error)))
                self._unserved.add(contract.service)
        if unserved:
            server.add_generic_rpc_handlers(unserved)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(stord_version(), self.backend_statuses, self._started), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        services = [contract.service for contract in CONTRACTS]
        reflection.enable_server_reflection(
            [*services, ADMIN_SERVICE, "grpc.health.v1.Health", reflection.SERVICE_NAME], server
        )
        self.port = self._bind(server, settings.listen, credentials)
        if settings.unix_socket is not None:
            settings.unix_socket.parent.mkdir(parents=True, exist_ok=True)
            settings.unix_socket.unlink(missing_ok=True)
            self._bind(server, f"unix:{settings.unix_socket}", None)
        if metrics is not None and metrics_address is not None:
            self._serve_metrics(metrics, backends, metrics_address)
        await server.start()
        self._server = server
        await self._refresh_health()
        self._background = [
            asyncio.create_task(self._watch_backends(), name="stord-health-monitor"),
            asyncio.create_task(self._sweep_expired(), name="stord-expiry-sweeper"),
            asyncio.create_task(
                retain_events_daily(database, settings.retention_days, also=self._job_retention()),
                name="stord-retention",
            ),
        ]
        self.alerts = alert_scheduler(database, settings, user_agent=f"stord/{stord_version()}")
        if self.alerts is not None:
            self.alerts.start()
        _log.info(
            "serving",
            listen=settings.listen
            if settings.listen.endswith(f":{self.port}")
            else f"{settings.listen}->{self.port}",
            unix_socket=str(settings.unix_socket) if settings.unix_socket else None,
            database=redact_url(database_url),
            cache=redact_url(settings.cache),
            version=stord_version(),
            api_keys=len(self.keys) if self.keys is not None else None,
            tls=credentials is not None,
            client_certificates=settings.tls_client_ca is not None,
            metrics=self._metrics_url(),
        )

    async def _page_tokens(self, role: str, backend: Backend) -> PageTokens:
        """Return the page-token codec of a role, sealed with the key its backend shares among daemons."""
        try:
            return PageTokens(await backend.page_token_key())
        except StoreError as error:
            raise StartupError(f"cannot read the page-token key of the {role} backend: {error}") from None

    def _serve_metrics(
        self, metrics: Metrics, backends: dict[str, Backend], address: tuple[str, int]
    ) -> None:
        """Collect backend health, load and job queue depth at scrape time, and bind the HTTP endpoint."""
        database = backends["database"]
        metrics.watch_backends(self.backend_statuses)
        metrics.watch_backend_load(backends)
        with contextlib.suppress(Unimplemented):  # a database without jobs (Redis) has no depth to report
            metrics.watch_jobs(database.jobs(), asyncio.get_running_loop())
        try:
            self._metrics_server = MetricsServer(metrics.registry, *address)
        except OSError as error:
            raise StartupError(
                f"cannot serve metrics on {self._settings.metrics_listen}: {error.strerror or error}"
            ) from None
        self.metrics_port = self._metrics_server.port

    def _metrics_url(self) -> str | None:
        address = self._settings.metrics_address
        if address is None:
            return None
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        return f"http://{host}:{self.metrics_port}/metrics"

    def _load_keys(self) -> KeyRing | None:
        """Open the keys file; refuse an unauthenticated non-loopback listener unless `insecure` is set."""
        settings = self._settings
        if settings.api_keys_file is None:
            self._check_unauthenticated_listener()
            return None
        try:
            keys = KeyRing(settings.api_keys_file)
        except KeysFileError as error:
            raise StartupError(str(error)) from None
        if settings.tls_cert is None and not settings.listens_on_loopback:
            _log.warning(
                "insecure",
                listen=settings.listen,
                reason="API keys over plaintext on a non-loopback address: bearer keys travel in clear;"
                " set --tls-cert and --tls-key",
            )
        return keys

    def _check_unauthenticated_listener(self) -> None:
        settings = self._settings
        if settings.listens_on_loopback:
            return
        if not settings.insecure:
            raise StartupError(
                f"refusing to serve {settings.listen} without API keys: anyone who can reach it could read"
                " and write every namespace; set --api-keys-file, listen on 127.0.0.1, or pass --insecure"
                " to accept the risk"
            )
        _log.warning("insecure", listen=settings.listen, reason="no API keys on a non-loopback address")

    def reload_keys(self) -> bool:
        """Read the keys file again (SIGHUP); on a bad file keep the keys in force and log why."""
        if self.keys is None:
            _log.warning("api_keys_not_reloaded", reason="SIGHUP, but no API keys file is configured")
            return False
        try:
            self.keys.reload()
        except KeysFileError as error:
            _log.error("api_keys_reload_failed", error=str(error), kept=len(self.keys))
            return False
        _log.info("api_keys_reloaded", count=len(self.keys))
        return True

    def _server_credentials(self) -> grpc.ServerCredentials | None:
        settings = self._settings
        if settings.tls_cert is None or settings.tls_key is None:
            return None
        try:
            chain = settings.tls_cert.read_bytes()
            key = settings.tls_key.read_bytes()
            client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
        except OSError as error:
            raise StartupError(f"cannot read TLS file {error.filename}: {error.strerror}") from None
        return grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )

    def backend_statuses(self) -> list[BackendStatus]:
        """Return the database's status, then the cache's."""
        statuses = [status for group in self._statuses.values() for status in group]
        return sorted(statuses, key=lambda status: status.role != "database")

    async def stop(self, grace: float | None = None) -> None:
        """Mark every service NOT_SERVING, let in-flight RPCs finish for `grace` seconds, close backends.

        Also after a failed `start`, to close what it opened: only a daemon that served logs `stopped`.
        """
        grace = self._settings.grace_period if grace is None else grace
        await self._health.enter_graceful_shutdown()
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.close)  # waits for a scrape in progress
        for task in self._background:
            task.cancel()
        if self._background:
            # Bounded: a task that swallows its cancel (a library catching CancelledError) must not hold the
            # daemon's exit; it ends with the event loop.
            _, stuck = await asyncio.wait(self._background, timeout=_BACKGROUND_STOP_TIMEOUT)
            for task in stuck:
                _log.warning("background_task_did_not_stop", task=task.get_name())
        if self.alerts is not None:
            try:  # before the backends close: cut-short deliveries are saved as failed
                async with asyncio.timeout(_BACKGROUND_STOP_TIMEOUT):
                    await self.alerts.close()
            except TimeoutError:
                _log.warning("background_task_did_not_stop", task="stord-alerts")
        for servicer in self._draining:
            await servicer.drain()
        if self._server is not None:
            _log.info("draining", grace_period_s=grace)
            await self._server.stop(grace)
        for backend in reversed(self._backends):
            await backend.close()
        if self._server is None:
            return  # never served: the Unix socket file, if any, is not ours to remove
        if self._settings.unix_socket is not None:
            self._settings.unix_socket.unlink(missing_ok=True)
        _log.info("stopped")

    async def serve_until_signalled(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully (at once on a second); call `ready` if serving.

        The signals stay handled until the process exits: one arriving late, as the process winds down, must
        not kill it with the default action (exit 143) after a clean stop.
        """
        stop_requested = asyncio.Event()
        stop_now = asyncio.Event()

        def request_stop() -> None:
            if stop_requested.is_set():
                stop_now.set()
            stop_requested.set()

        loop = asyncio.get_running_loop()
        on_stop_signals(loop, request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload_keys)
        try:
            try:
                await self.start()
            except BaseException:
                await self.stop(0)
                raise
            if ready is not None:
                ready()
            await stop_requested.wait()
            _log.info("stop_requested")
            await self._stop_unless_hurried(stop_now)
        finally:
            ignore_signals_until_exit(loop)

    async def _stop_unless_hurried(self, stop_now: asyncio.Event) -> None:
        """Stop gracefully; once `stop_now` is set, end the calls still in flight at once."""
        stopping = asyncio.create_task(self.stop())
        hurried = asyncio.create_task(stop_now.wait())
        try:
            await asyncio.wait([stopping, hurried], return_when=asyncio.FIRST_COMPLETED)
            if not stopping.done():
                _log.warning("stop_now", reason="a second signal")
                if self._server is not None:
                    await self._server.stop(0)  # cancels the calls the graceful stop is waiting for
            await stopping
        finally:
            hurried.cancel()

    def _bind(self, server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as error:
            raise StartupError(f"cannot listen on {address}: {error}") from None
        if port == 0 and not address.startswith("unix:"):
            raise StartupError(f"cannot listen on {address}: address in use or not available")
        return port

    async def _open_role(self, role: str, url: str, *, fallback: bool) -> Backend:
        backend = create_backend(url, self._settings, clock=self._clock)
        try:
            await open_with_retry(backend, url, role, self._settings.connect)
        except Unavailable as error:
            await backend.close()
            if not fallback:
                raise StartupError(f"{role} backend {redact_url(url)} is unreachable: {error}") from None
            _log.warning(
                "backend_fallback", role=role, url=redact_url(url), fallback="memory://", error=str(error)
            )
            backend = MemoryBackend(clock=self._clock)
            status = BackendStatus(role, backend.kind, "memory://", detail=f"fallback: {error}")
            status.configured_url = redact_url(url)
        else:
            status = BackendStatus(role, backend.kind, redact_url(url))
        self._backends.append(backend)
        self._statuses[backend] = [status]
        return backend

    async def _watch_backends(self) -> None:
        while True:
            await asyncio.sleep(self._settings.health_check_interval)
            try:
                await self._refresh_health()
            except Exception:  # a bug in one check must not freeze health at its last state
                _log.exception("health_check_crashed")
                if self.metrics is not None:
                    self.metrics.internal_error()

    async def sweep_expired(self) -> int:
        """Delete expired records on every backend now; return how many went."""
        deleted = 0
        for backend in self._backends:
            try:
                deleted += await backend.sweep()
            except Unavailable as error:
                _log.warning("expiry_sweep_failed", kind=backend.kind, error=str(error))
        return deleted

    async def evaluate_alerts(self) -> PassOutcome:
        """Evaluate the alert rules now, as the schedule would; return what the pass did."""
        if self.alerts is None:
            return PassOutcome()
        return await self.alerts.run_once()

    async def settle_lapsed_leases(self) -> LeaseSweep:
        """Settle the jobs whose lease ran out by now (failed or made due again); return how many."""
        if self._jobs is None:
            return LeaseSweep()
        swept = await settle_lapsed_leases(self._jobs)
        if self.metrics is not None:
            self.metrics.count_lapsed_leases(swept.failed, swept.retried)
        return swept

    async def purge_finished_jobs(self) -> JobPurge:
        """Delete the finished jobs past their retention now; return how many went."""
        if self._jobs is None:
            return JobPurge()
        purge = await purge_finished_jobs(
            self._jobs,
            completed_days=self._settings.completed_job_retention_days,
            failed_days=self._settings.failed_job_retention_days,
        )
        if self.metrics is not None:
            self.metrics.count_job_purge(purge.completed, purge.failed)
        return purge

    def _job_retention(self) -> Callable[[], Awaitable[JobPurge]] | None:
        settings = self._settings
        if self._jobs is None or not (
            settings.completed_job_retention_days or settings.failed_job_retention_days
        ):
            return None
        return self.purge_finished_jobs

    async def _sweep_expired(self) -> None:
        while True:
            await asyncio.sleep(self._settings.expiry_sweep_interval)
            try:
                deleted = await self.sweep_expired()
            except Exception:
                _log.exception("expiry_sweep_crashed")
                if self.metrics is not None:
                    self.metrics.internal_error()
            else:
                _log.debug("expired_deleted", count=deleted)
            try:
                await self.settle_lapsed_leases()
            except Unavailable as error:
                _log.warning("lease_sweep_failed", error=str(error))
            except Exception:
                _log.exception("lease_sweep_crashed")

    async def _refresh_health(self) -> None:
        for backend, statuses in self._statuses.items():
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancel that arrives as the
                # check completes, and the daemon's stop then waited for this loop forever.
                async with asyncio.timeout(max(self._settings.health_check_interval, _MIN_CHECK_TIMEOUT)):
                    await backend.check()
                healthy, detail = True, ""
            except (StoreError, TimeoutError) as error:
                healthy, detail = False, str(error) or "health check timed out"
            for status in statuses:
                if status.healthy != healthy:
                    log = _log.info if healthy else _log.warning
                    log("backend_health", role=status.role, kind=status.kind, healthy=healthy, detail=detail)
                status.healthy = healthy
                if status.configured_url is None:
                    status.detail = detail
        by_role = {status.role: status.healthy for status in self.backend_statuses()}
        for contract in CONTRACTS:
            serving = by_role[contract.role] and contract.service not in self._unserved
            await self._health.set(contract.service, _SERVING if serving else _NOT_SERVING)
        await self._health.set(ADMIN_SERVICE, _SERVING)
        # Overall readiness follows the database: a degraded cache answers UNAVAILABLE on its own service.
        await self._health.set(OVERALL, _SERVING if by_role["database"] else _NOT_SERVING)

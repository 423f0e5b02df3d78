"""Settings: defaults < YAML file < `STORD_*` environment < command-line flags, validated at startup.

The flag and environment names are part of the interface (DESIGN 3). Pool sizes, timeouts and the fallback
policy live only in the YAML file. YAML values may reference the environment as `${NAME}`, so secrets need not
be written into the file.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "ENVIRONMENT",
    "AlertOptions",
    "ConfigError",
    "ConnectOptions",
    "PostgresOptions",
    "RedisOptions",
    "Settings",
    "SqliteOptions",
    "load_settings",
    "load_settings_with_sources",
    "redact_url",
    "unread_variables",
]

ENVIRONMENT: dict[str, str] = {
    "listen": "STORD_LISTEN",
    "unix_socket": "STORD_UNIX_SOCKET",
    "data_dir": "STORD_DATA_DIR",
    "database": "STORD_DATABASE_URL",
    "cache": "STORD_CACHE_URL",
    "log_format": "STORD_LOG_FORMAT",
    "log_level": "STORD_LOG_LEVEL",
    "retention_days": "STORD_RETENTION_DAYS",
    "completed_job_retention_days": "STORD_COMPLETED_JOB_RETENTION_DAYS",
    "failed_job_retention_days": "STORD_FAILED_JOB_RETENTION_DAYS",
    "api_keys_file": "STORD_API_KEYS_FILE",
    "insecure": "STORD_INSECURE",
    "tls_cert": "STORD_TLS_CERT",
    "tls_key": "STORD_TLS_KEY",
    "tls_client_ca": "STORD_TLS_CLIENT_CA",
    "metrics_listen": "STORD_METRICS_LISTEN",
    "workers": "STORD_WORKERS",
    "alert_interval": "STORD_ALERT_INTERVAL",
    "access_log": "STORD_ACCESS_LOG",
    "access_log_sample": "STORD_ACCESS_LOG_SAMPLE",
    "slow_call_ms": "STORD_SLOW_CALL_MS",
}
"""Setting name -> environment variable; the same names are the YAML keys and (dashed) the flags."""

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


MAX_RETENTION_DAYS = 36_500
"""A century: a cutoff further back adds nothing, and every cutoff stays within a Timestamp's range."""


class ConfigError(Exception):
    """The settings are unusable; the message says which one and why."""


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqliteOptions(_Options):
    """SQLite tuning (DESIGN 3): WAL, one writer thread, pooled readers."""

    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    readers: int = Field(default=4, ge=1, le=64)
    cache_size_mb: int = Field(default=64, ge=1)
    busy_timeout_ms: int = Field(default=5000, ge=0)


class PostgresOptions(_Options):
    """PostgreSQL connection pool, and how soon its connections notice a server that stopped answering.

    The defaults keep a call within the client's default 5 s deadline when packets to the server are dropped
    silently (a network partition): a connection with unacknowledged data is dropped after
    `tcp_user_timeout`, an idle one after `keepalive_idle` plus `keepalive_count` unanswered probes.
    """

    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    connect_timeout: float = Field(default=3.0, gt=0)
    """Seconds to connect (libpq: whole seconds, at least 2) and to wait for a pooled connection."""
    statement_timeout: float = Field(default=30.0, ge=0)
    """Seconds the server lets one statement of the pool's connections run; 0 leaves the server's setting."""
    tcp_user_timeout: float = Field(default=3.0, ge=0)
    """Seconds sent data may stay unacknowledged before the kernel drops the connection; 0: the system's."""
    keepalive_idle: int = Field(default=5, ge=1)
    """Seconds of silence on a connection before the kernel probes whether the server is still there."""
    keepalive_interval: int = Field(default=1, ge=1)
    """Seconds between two probes."""
    keepalive_count: int = Field(default=3, ge=1)
    """Unanswered probes after which the connection is dropped."""


class RedisOptions(_Options):
    """Redis connection pool, and how soon its connections notice a server that stopped answering."""

    max_connections: int = Field(default=64, ge=1)
    socket_timeout: float = Field(default=3.0, gt=0)
    """Seconds a command may wait for its reply (and for a free connection of the pool)."""
    socket_connect_timeout: float = Field(default=3.0, gt=0)
    """Seconds to connect."""
    health_check_interval: float = Field(default=10.0, ge=0)
    """A connection idle for longer is checked with PING before it is used again; 0 never checks."""
    keepalive_idle: int = Field(default=5, ge=1)
    """Seconds of silence on a connection before the kernel probes whether the server is still there."""
    keepalive_interval: int = Field(default=1, ge=1)
    keepalive_count: int = Field(default=3, ge=1)
    tcp_user_timeout: float = Field(default=3.0, ge=0)
    """Seconds sent data may stay unacknowledged before the kernel drops the connection; 0: the system's."""


class ConnectOptions(_Options):
    """How hard startup tries to reach a backend, and what happens when it cannot."""

    attempts: int = Field(default=5, ge=1, le=100)
    initial_backoff: float = Field(default=0.2, gt=0)
    max_backoff: float = Field(default=5.0, gt=0)
    cache_fallback: bool = True
    """An unreachable cache is replaced by the memory cache, with a warning."""
    database_fallback: bool = False
    """An unreachable database is replaced by memory only when asked: it would lose data silently."""


class AlertOptions(_Options):
    """Webhook delivery of alerts (YAML only: secrets stay out of flags and the process list)."""

    webhook_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    """Namespace -> the secret that signs its webhooks (HMAC-SHA256); `*` for every other namespace.
    Printed as `**********` wherever settings are shown."""
    delivery_deadline: float = Field(default=300.0, gt=0)
    """Seconds a notice is retried for before its delivery is marked failed."""
    initial_backoff: float = Field(default=1.0, gt=0)
    max_backoff: float = Field(default=60.0, gt=0)
    request_timeout: float = Field(default=10.0, gt=0)


class Settings(BaseModel):
    """Everything `stord serve` needs, validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = "127.0.0.1:50051"
    unix_socket: Path | None = None
    data_dir: Path = Path("./stord-data")
    database: str = ""
    """Empty means `sqlite:///<data dir>/stord.db`."""
    cache: str = "memory://"
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: Literal["all", "slow-and-failed"] = "all"
    """Which RPCs get an `rpc` log line: all (sampled by `access_log_sample`), or only failed and slow."""
    access_log_sample: float = Field(default=1.0, gt=0, le=1)
    """The fraction of successful calls faster than `slow_call_ms` that are logged, with `access_log: all`."""
    slow_call_ms: float = Field(default=1000.0, ge=0)
    """A unary call that takes this long is slow: always logged. Streams are judged by failure only."""
    retention_days: int = Field(default=90, ge=0)
    completed_job_retention_days: int = Field(default=7, ge=0, le=MAX_RETENTION_DAYS)
    """Days a COMPLETED job is kept after it finished; 0 keeps them forever."""
    failed_job_retention_days: int = Field(default=30, ge=0, le=MAX_RETENTION_DAYS)
    """Days a FAILED job is kept after it failed for good; 0 keeps them forever."""
    grace_period: float = Field(default=10.0, ge=0)
    """Seconds that in-flight RPCs get to finish after SIGTERM."""
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024 * 1024)
    health_check_interval: float = Field(default=5.0, gt=0)
    long_poll_recheck_interval: float = Field(default=1.0, gt=0)
    """Seconds a long-polling Dequeue waits at most between looks, for jobs that fall due with time (an
    enqueue wakes it at once)."""
    expiry_sweep_interval: float = Field(default=60.0, gt=0)
    """Seconds between passes that delete expired cache values (invisible from the moment they expire)."""
    sqlite: SqliteOptions = SqliteOptions()
    postgres: PostgresOptions = PostgresOptions()
    redis: RedisOptions = RedisOptions()
    connect: ConnectOptions = ConnectOptions()
    api_keys_file: Path | None = None
    """YAML file of API keys (by SHA-256 hash); when set, every stord RPC needs `authorization: Bearer`."""
    insecure: bool = False
    """Allow serving a non-loopback address without API keys (logged as a warning)."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    """When set, clients must present a certificate signed by this CA (mTLS)."""
    metrics_listen: str | None = None
    """HOST:PORT of the Prometheus endpoint (plain HTTP); None serves no metrics."""
    workers: int = Field(default=1, ge=1, le=64)
    """Server processes sharing the TCP port (SO_REUSEPORT); more than 1 needs shared backends."""
    alert_interval: float = Field(default=60.0, ge=0)
    """Seconds between evaluations of each alert rule, across the daemons sharing a database; 0 = never."""
    alerts: AlertOptions = AlertOptions()

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        return self

    @model_validator(mode="after")
    def _check_workers(self) -> Settings:
        if self.workers == 1:
            return self
        if urlsplit(self.database).scheme == "memory":
            raise ValueError(
                f"workers={self.workers} with database memory:// would give each process its own data;"
                " use SQLite or PostgreSQL, or workers=1"
            )
        if urlsplit(self.cache).scheme == "memory":
            raise ValueError(
                f"workers={self.workers} needs a cache all the processes share (memory:// would be one per"
                " process, so a value set through one would be missing through another); set cache to the"
                " database URL or a redis:// URL, or workers=1"
            )
        if self.unix_socket is not None:
            raise ValueError(
                f"workers={self.workers} cannot share a Unix socket between processes; drop unix_socket"
                " (serve TCP) or use workers=1"
            )
        return self

    @property
    def listens_on_loopback(self) -> bool:
        """Return whether the TCP address is reachable from this host only."""
        host = self.listen.rpartition(":")[0].strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False  # a host name may resolve to anything

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        _split_address(value, example_port=50051)
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _check_metrics_listen(cls, value: str | None) -> str | None:
        if value is not None:
            _split_address(value, example_port=9464)
        return value

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Return the metrics endpoint's host (brackets of IPv6 removed) and port, or None."""
        if self.metrics_listen is None:
            return None
        return _split_address(self.metrics_listen, example_port=9464)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database", "cache")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        if value and urlsplit(value).scheme not in _SCHEMES:
            forms = _URL_FORMS[str(info.field_name)]  # the name of the setting being checked
            raise ValueError(f"unsupported URL scheme in {redact_url(value)!r}; use {forms}")
        return value

    @property
    def database_url(self) -> str:
        """Return the database URL, the SQLite default filled in."""
        return self.database or f"sqlite:///{self.data_dir.resolve() / 'stord.db'}"


def _split_address(value: str, *, example_port: int) -> tuple[str, int]:
    """Return the host and port of `HOST:PORT`; raise ValueError naming the expected form."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"must be HOST:PORT, for example 127.0.0.1:{example_port} or [::1]:{example_port}")
    if int(port) > 65535:
        raise ValueError(f"port {port} is out of range: must be 1-65535 (or 0, any free port)")
    return host.strip("[]"), int(port)


_SCHEMES = {"memory", "sqlite", "postgresql", "postgres", "redis", "rediss", "unix"}
_REDIS_FORMS = "redis://..., rediss://... (TLS) or unix:///path/to/redis.sock"
_DATABASE_FORMS = "sqlite:///path/to/stord.db, postgresql://... (or postgres://...)"
_URL_FORMS = {
    "database": f"{_DATABASE_FORMS}, {_REDIS_FORMS}, or memory://",
    "cache": f"memory://, {_REDIS_FORMS}, or a database URL: {_DATABASE_FORMS}",
}
"""What each URL setting accepts: unix:// is Redis over its Unix socket, not a database of its own."""


def redact_url(url: str) -> str:
    """Hide the password of a URL, for logs and GetInfo."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _expand_references(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match[1]
            if name not in environ:
                raise ConfigError(f"config file references ${{{name}}}, which is not set in the environment")
            return environ[name]

        return _ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, dict):
        return {key: _expand_references(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_references(item, environ) for item in value]
    return value


def _read_yaml(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    expanded: dict[str, Any] = _expand_references(loaded, environ)
    return expanded


def load_settings(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the layers, later ones winning, and validate the result; raise ConfigError on any problem."""
    return load_settings_with_sources(config_file=config_file, environ=environ, flags=flags)[0]


def load_settings_with_sources(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> tuple[Settings, dict[str, str]]:
    """Return the settings and, for each one not left at its default, where its value came from.

    Sources read `file PATH`, `env NAME` or `flag --name`, keyed by setting name, and `group.key` for the
    tuning groups (`sqlite.readers`); a setting absent from the mapping is at its default.
    """
    environ = os.environ if environ is None else environ
    layers: dict[str, Any] = {}
    sources: dict[str, str] = {}
    config_file = config_file or (Path(environ["STORD_CONFIG"]) if environ.get("STORD_CONFIG") else None)
    if config_file is not None:
        from_file = _read_yaml(config_file, environ)
        layers.update(from_file)
        for name, value in from_file.items():
            sources[name] = f"file {config_file}"
            if isinstance(value, dict):  # tuning groups: each key the file gives
                sources.update({f"{name}.{key}": f"file {config_file}" for key in value})
    for name, var in ENVIRONMENT.items():
        if environ.get(var):
            layers[name] = environ[var]
            sources[name] = f"env {var}"
    for name, value in (flags or {}).items():
        if value is not None:
            layers[name] = value
            sources[name] = f"flag --{name.replace('_', '-')}"
    try:
        return Settings.model_validate(layers), sources
    except ValidationError as error:
        problems = "; ".join(_problem(issue["loc"], issue["msg"]) for issue in error.errors())
        raise ConfigError(f"invalid settings: {problems}") from None


def unread_variables(
    environ: Mapping[str, str], read: Iterable[str], *, config_file: Path | None = None
) -> list[tuple[str, str | None]]:
    """Return each `STORD_` variable of `environ` not in `read`, with the closest name that is, if any.

    The `${NAME}` references of the config file (`config_file`, else STORD_CONFIG) count as read. Not an
    error: other tools may share the prefix, but a typo would otherwise fall back to a default unseen.
    """
    read = set(read)
    config_file = config_file or (Path(environ["STORD_CONFIG"]) if environ.get("STORD_CONFIG") else None)
    if config_file is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):  # loading the settings reports those
            read.update(_ENV_REFERENCE.findall(config_file.read_text(encoding="utf-8")))
    known = {name.removeprefix("STORD_"): name for name in read}  # the shared prefix would make all close

    def closest(name: str) -> str | None:
        matches = difflib.get_close_matches(name.removeprefix("STORD_"), sorted(known), n=1)
        return known[matches[0]] if matches else None

    return [
        (name, closest(name))
        for name in sorted(environ)
        if name.startswith("STORD_") and name not in known.values()
    ]


def _problem(location: tuple[int | str, ...], message: str) -> str:
    """Return one validation error as `setting: what is wrong`; a problem of the whole, just what is wrong."""
    message = message.removeprefix("Value error, ")  # pydantic's wording for a ValueError of our validators
    if not location:
        return message
    return f"{'.'.join(str(part) for part in location)}: {message}"

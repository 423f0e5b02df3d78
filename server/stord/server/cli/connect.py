"""How every CLI command that dials a daemon connects: address, API key and TLS, from flags or `STORD_*`.

One set of options for `stord health`, `kv`, `jobs` and `events tail`, so a TLS daemon is reached the same way
by each. The client names differ from the server's (`--tls-client-cert`, not `--tls-cert`): a container that
sets `STORD_TLS_CERT` for its daemon must not hand the server's certificate to its own health check as a
client certificate.

A connection that fails is examined once more with a plain TLS handshake (`diagnose`), so that a TLS problem
is reported as one instead of gRPC's "Socket closed" or "failed to connect to all addresses".
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

    from stord.client import Tls

__all__ = [
    "CLIENT_ENVIRONMENT",
    "Connection",
    "ConnectionOptionsError",
    "add_connection_flags",
    "connection_from",
]

DEFAULT_ADDRESS = "127.0.0.1:50051"

CLIENT_ENVIRONMENT: dict[str, str] = {
    "address": "STORD_ADDRESS",
    "namespace": "STORD_NAMESPACE",
    "api_key": "STORD_API_KEY",
    "tls": "STORD_TLS",
    "tls_ca": "STORD_TLS_CA",
    "tls_client_cert": "STORD_TLS_CLIENT_CERT",
    "tls_client_key": "STORD_TLS_CLIENT_KEY",
    "tls_server_name": "STORD_TLS_SERVER_NAME",
}
"""Client option -> environment variable; the flag is the option's name, dashed."""

_DIAGNOSE_TIMEOUT = 2.0
"""Seconds the handshake that explains a failed connection may take."""


class ConnectionOptionsError(Exception):
    """The connection options are unusable (a file that cannot be read, a key without its certificate)."""


@dataclass(frozen=True)
class Connection:
    """Where a command dials and how: the address, the API key and the TLS settings, all resolved."""

    address: str
    namespace: str | None = None
    api_key: str | None = None
    tls: bool = False
    """Whether to speak TLS; implied by any of the TLS files or a server name."""
    ca: bytes | None = None
    """PEM roots that verify the daemon; None trusts the system's roots."""
    client_cert: bytes | None = None
    client_key: bytes | None = None
    server_name: str | None = None
    """The name the daemon's certificate must carry, when it is not the address's host."""
    tls_variables: tuple[str, ...] = ()
    """The environment variables among the TLS options in force, for hints that say what to unset."""

    def client_tls(self) -> Tls | bool:
        """Return the client's `tls=` argument."""
        from stord.client import Tls

        if not self.tls:
            return False
        return Tls(root_certificates=self.ca, private_key=self.client_key, certificate_chain=self.client_cert)

    def channel_options(self) -> list[tuple[str, Any]]:
        """Return the gRPC channel options the TLS settings need (the server name override)."""
        if self.tls and self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []

    def open_channel(self) -> grpc.Channel:
        """Return a blocking grpc channel to the daemon (for probes that do not go through the client)."""
        import grpc

        if not self.tls:
            return grpc.insecure_channel(self.address)
        credentials = grpc.ssl_channel_credentials(self.ca, self.client_key, self.client_cert)
        return grpc.secure_channel(self.address, credentials, options=self.channel_options())

    def diagnose(self) -> str | None:
        """Return why a connection to a TCP address fails at the TLS layer, or None when it is not that.

        Called after a call failed UNAVAILABLE: one more connection, with a TLS handshake of its own, tells a
        plaintext client at a TLS daemon, a TLS client at a plaintext daemon, an untrusted certificate, a name
        mismatch and a missing client certificate apart.
        """
        target = _tcp_target(self.address)
        if target is None:
            return None  # a Unix socket is always plaintext
        host, port = target
        try:
            raw = socket.create_connection((host, port), timeout=_DIAGNOSE_TIMEOUT)
        except OSError as error:
            return f"cannot connect to {host}:{port}: {error.strerror or error}"
        with raw:
            if self.tls:
                return self._diagnose_tls(raw, host)
            return _diagnose_plaintext(raw, self.address)

    def _diagnose_tls(self, raw: socket.socket, host: str) -> str | None:
        context = ssl.create_default_context(cadata=self.ca.decode() if self.ca else None)
        if self.client_cert and self.client_key:
            _load_client_certificate(context, self.client_cert, self.client_key)
        context.set_alpn_protocols(["h2"])
        name = self.server_name or host
        try:
            with context.wrap_socket(raw, server_hostname=name) as wrapped:
                # TLS 1.3 sends a refusal of the client certificate after the handshake: read to see it.
                wrapped.settimeout(0.5)
                try:
                    if wrapped.recv(1) == b"":
                        return self._refused("it closed the connection after the handshake")
                except (TimeoutError, ssl.SSLWantReadError):
                    return None  # waiting for HTTP/2, as a daemon that accepted us does
        except ssl.SSLCertVerificationError as error:
            return (
                f"TLS: the daemon's certificate is not trusted for {name!r}: {error.verify_message}"
                " (check --tls-ca / STORD_TLS_CA, or --tls-server-name / STORD_TLS_SERVER_NAME)"
            )
        except ssl.SSLError as error:
            reason = error.reason or str(error)
            if "CERTIFICATE" in reason or "HANDSHAKE_FAILURE" in reason:
                return self._refused(reason)
            if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH" in reason:
                unset = f" or unset {', '.join(self.tls_variables)}" if self.tls_variables else ""
                return f"TLS: the daemon does not speak TLS at this address (drop the --tls* options{unset})"
            return f"TLS: the handshake with the daemon failed: {reason}"
        except OSError as error:
            return f"TLS: the daemon closed the connection during the handshake ({error.strerror or error})"
        return None

    def _refused(self, how: str) -> str:
        if self.client_cert is None:
            return (
                f"TLS: the daemon refused the connection ({how}): it requires a client certificate its CA"
                " signed (--tls-client-cert and --tls-client-key, or STORD_TLS_CLIENT_CERT and"
                " STORD_TLS_CLIENT_KEY)"
            )
        return f"TLS: the daemon refused the connection ({how}): it does not accept this client certificate"


def _diagnose_plaintext(raw: socket.socket, address: str) -> str | None:
    """Return a hint when the daemon at `raw` speaks TLS to a client that does not."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with context.wrap_socket(raw):
            pass  # a handshake completed: the daemon speaks TLS
    except ssl.SSLError as error:
        if "ALERT" not in (error.reason or ""):
            return None  # no TLS answer (a plaintext daemon answers garbage or hangs up): something else
        # A TLS alert (a client certificate required, say): the daemon speaks TLS.
    except OSError:
        return None
    return (
        f"TLS: the daemon at {address} serves TLS, and this command spoke plaintext; pass --tls-ca PEM"
        " (STORD_TLS_CA), or --tls (STORD_TLS=1) when the system's roots verify it"
    )


def _load_client_certificate(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """Load a client certificate from PEM bytes (the ssl module reads chains from files only)."""
    with tempfile.TemporaryDirectory(prefix="stord-tls-") as directory:
        cert_file, key_file = Path(directory, "client.pem"), Path(directory, "client.key")
        cert_file.write_bytes(cert)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key)
        context.load_cert_chain(cert_file, key_file)


def _tcp_target(address: str) -> tuple[str, int] | None:
    if address.startswith("unix:"):
        return None
    host, sep, port = address.removeprefix("dns:///").removeprefix("ipv4:").rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def add_connection_flags(
    parser: argparse.ArgumentParser, *, namespace: bool = True, address_help: str | None = None
) -> None:
    """Add the options every dialling command takes; defaults come from `connection_from`, not here."""
    group = parser.add_argument_group("connection (flags win over the environment)")
    group.add_argument(
        "--address",
        help=address_help
        or f"the daemon: host:port or unix:/path.sock (STORD_ADDRESS; default {DEFAULT_ADDRESS})",
    )
    if namespace:
        group.add_argument(
            "--namespace", help="namespace to work in (STORD_NAMESPACE; default: the daemon's `default`)"
        )
    group.add_argument("--api-key", help="API key, when the daemon requires one (STORD_API_KEY)")
    group.add_argument(
        "--tls",
        action="store_const",
        const=True,
        help="speak TLS, trusting the system's roots (STORD_TLS=1); implied by the options below",
    )
    group.add_argument(
        "--tls-ca", type=Path, metavar="PEM", help="CA that signed the daemon's certificate (STORD_TLS_CA)"
    )
    group.add_argument(
        "--tls-client-cert",
        type=Path,
        metavar="PEM",
        help="client certificate, for mTLS (STORD_TLS_CLIENT_CERT)",
    )
    group.add_argument(
        "--tls-client-key", type=Path, metavar="PEM", help="its private key (STORD_TLS_CLIENT_KEY)"
    )
    group.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="name the daemon's certificate carries, when not the address's host (STORD_TLS_SERVER_NAME)",
    )


def connection_from(
    arguments: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    *,
    default_address: str = DEFAULT_ADDRESS,
    tls_by_default: bool = False,
) -> Connection:
    """Resolve the connection options: a flag, else its environment variable, else the default.

    `tls_by_default` turns TLS on without any client option (`stord health` of a daemon whose own settings
    serve TLS). Raise ConnectionOptionsError naming the option whose file cannot be used.
    """
    environ = os.environ if environ is None else environ

    def value(name: str) -> Any:
        given = getattr(arguments, name, None)
        if given is not None:
            return given
        return environ.get(CLIENT_ENVIRONMENT[name]) or None

    ca, cert, key = (_read_pem(name, value(name)) for name in ("tls_ca", "tls_client_cert", "tls_client_key"))
    if (cert is None) != (key is None):
        raise ConnectionOptionsError("--tls-client-cert and --tls-client-key go together")
    server_name = value("tls_server_name")
    enabled = value("tls")
    if isinstance(enabled, str):
        enabled = _parse_bool(CLIENT_ENVIRONMENT["tls"], enabled)
    tls = enabled is True or any(part is not None for part in (ca, cert, server_name)) or tls_by_default
    tls_variables = tuple(
        variable
        for name, variable in CLIENT_ENVIRONMENT.items()
        if name.startswith("tls")
        and getattr(arguments, name, None) is None
        and environ.get(variable)
        and (name != "tls" or enabled is True)
    )
    return Connection(
        address=value("address") or default_address,
        namespace=value("namespace") if hasattr(arguments, "namespace") else None,
        api_key=value("api_key"),
        tls=tls,
        ca=ca,
        client_cert=cert,
        client_key=key,
        server_name=server_name,
        tls_variables=tls_variables if tls else (),
    )


_BOOLEANS = dict.fromkeys(("1", "true", "yes", "on"), True) | dict.fromkeys(
    ("0", "false", "no", "off"), False
)


def _parse_bool(variable: str, text: str) -> bool:
    """Return the switch `text` spells; refuse anything else, so that `ture` is not quietly `false`."""
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ConnectionOptionsError(
            f"{variable}={text!r} is not a boolean: use 1/0, true/false, yes/no or on/off"
        ) from None


def _read_pem(name: str, path: Path | str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        flag = "--" + name.replace("_", "-")
        raise ConnectionOptionsError(
            f"{flag} ({CLIENT_ENVIRONMENT[name]}): cannot read {path}: {error.strerror}"
        ) from None

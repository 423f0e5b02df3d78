"""The TCP listen address, checked before startup opens anything: a taken port fails first, alone."""

from __future__ import annotations

import socket

__all__ = ["ListenError", "check_port_free", "join_address"]


class ListenError(Exception):
    """Nothing of ours can listen on the address; the message names it and says why."""


def join_address(host: str, port: int) -> str:
    """Return `HOST:PORT`, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_port_free(listen: str) -> str:
    """Return `listen` with its port fixed (port 0 picks one now); raise ListenError when it is taken.

    The probe binds without SO_REUSEPORT, so it fails against any listener, one that shares its port
    included; SO_REUSEADDR lets it ignore connections of an earlier run lingering in TIME_WAIT.
    """
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]")
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host or None, int(port_text), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
            port: int = probe.getsockname()[1]
    except OSError as error:
        raise ListenError(f"cannot listen on {listen}: {error.strerror or error}") from None
    return join_address(host, port)

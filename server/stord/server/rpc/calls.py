"""Who is calling, in which namespace: set once per RPC by the interceptor, read by servicers."""

from __future__ import annotations

import functools
import re
from contextvars import ContextVar
from dataclasses import dataclass

from stord.server.ports import InvalidArgument

__all__ = [
    "NAMESPACE_METADATA",
    "PRINCIPAL_METADATA",
    "Call",
    "current_call",
    "namespace",
    "principal",
    "resolve_namespace",
    "resolve_principal",
]

NAMESPACE_METADATA = "stord-namespace"
DEFAULT_NAMESPACE = "default"
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

PRINCIPAL_METADATA = "stord-principal"
_PRINCIPAL = re.compile(r"[!-~](?:[ -~]{0,254}[!-~])?")


@dataclass(frozen=True, slots=True)
class Call:
    """The facts about one RPC that every layer may need."""

    request_id: str
    method: str
    namespace: str
    principal: str = ""
    """Who is calling: the `stord-principal` metadata value until authentication exists; '' when anonymous."""


current_call: ContextVar[Call] = ContextVar("stord_current_call")


def namespace() -> str:
    """Return the namespace of the RPC being served."""
    return current_call.get().namespace


def principal() -> str:
    """Return the principal of the RPC being served, '' for an anonymous caller."""
    return current_call.get().principal


def resolve_principal(requested: str | None) -> str:
    """Validate the principal a caller claimed, '' when it claimed none."""
    if requested is None:
        return ""
    if _PRINCIPAL.fullmatch(requested) is None:
        raise InvalidArgument(
            PRINCIPAL_METADATA,
            "must be 1-256 printable ASCII characters, without spaces at either end",
        )
    return requested


@functools.lru_cache(maxsize=4096)  # a handful of namespaces make every call: check each once
def resolve_namespace(requested: str | None) -> str:
    """Validate the namespace a caller asked for, `default` when it asked for none."""
    if requested is None:
        return DEFAULT_NAMESPACE
    if _NAMESPACE.fullmatch(requested) is None:
        raise InvalidArgument(
            NAMESPACE_METADATA,
            "must be 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit",
        )
    return requested

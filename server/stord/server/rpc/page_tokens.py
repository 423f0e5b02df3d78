"""Page tokens: one sealed codec for every listing of every contract (AIP-158).

A token is opaque to clients: base64url (no padding) of a version byte, the position the listing resumes
after (a JSON array of 64-bit integers and strings) and an HMAC-SHA256 over the version, the listing (the
request's message name), the namespace, a fingerprint of the request's other fields, and the position. A
token is only read after its MAC checks out, so a forged, altered or truncated token, or one issued for
another namespace, listing or query, is INVALID_ARGUMENT naming `page_token` before any of its content
reaches a parser or a query. The key is shared through the database (`page_token_key` of the backend), so a
token issued by one daemon pages on every other daemon over the same database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from typing import Final

import orjson
from google.protobuf.message import Message

from stord.server.ports import InvalidArgument

__all__ = ["KEY_BYTES", "PageTokens", "Position", "new_key"]

KEY_BYTES: Final = 32
"""Bytes of a page-token key: HMAC-SHA256 gains nothing from a longer one."""

_VERSION: Final = 1
_MAC_BYTES: Final = 32
_MAX_TOKEN_CHARS: Final = 4096
"""A longer token was not issued here; refusing it early bounds the work a hostile one costs."""
_TOKEN_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]+")
_INT64: Final = range(-(2**63), 2**63)
_UNPAGED_FIELDS: Final = frozenset({"page_token", "page_size", "limit", "offset"})
"""Fields a client may change between pages (the position is the token's); every other field binds it."""
_FIELD: Final = "page_token"

Position = tuple[int | str, ...]
"""Where a listing resumes: integers within 64 bits and strings, as the listing issued them."""


def new_key() -> bytes:
    """Return a fresh random page-token key."""
    return secrets.token_bytes(KEY_BYTES)


def _invalid(reason: str = "is not a token this server issued for this listing and query") -> InvalidArgument:
    return InvalidArgument(_FIELD, reason)


def _fingerprint(request: Message) -> bytes:
    """Return what binds a token to its query: the request's fields other than the paging ones."""
    query = type(request)()
    query.CopyFrom(request)
    for name in _UNPAGED_FIELDS:
        if name in query.DESCRIPTOR.fields_by_name:
            query.ClearField(name)
    return hashlib.sha256(query.SerializeToString(deterministic=True)).digest()


def _framed(*parts: bytes) -> bytes:
    """Concatenate parts unambiguously: each prefixed by its length."""
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def _checked_part(part: object) -> int | str:
    if isinstance(part, bool) or not isinstance(part, int | str):
        raise _invalid()
    if isinstance(part, int) and part not in _INT64:
        raise _invalid()
    if isinstance(part, str) and "\x00" in part:
        raise _invalid()
    return part


class PageTokens:
    """Issue and open the page tokens of one daemon, sealed with the key its database shares."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a page-token key needs at least 16 bytes")
        self._key = key

    def _mac(self, request: Message, namespace: str, body: bytes) -> bytes:
        signed = _framed(
            bytes([_VERSION]),
            request.DESCRIPTOR.full_name.encode(),
            namespace.encode(),
            _fingerprint(request),
            body,
        )
        return hmac.new(self._key, signed, hashlib.sha256).digest()

    def issue(self, request: Message, namespace: str, *position: int | str) -> str:
        """Return the token that resumes `request`'s listing after `position` in `namespace`."""
        if not all(type(part) is str or (type(part) is int and part in _INT64) for part in position):
            raise ValueError(f"a page position holds strings and 64-bit integers, not {position!r}")
        body = orjson.dumps(position)
        sealed = bytes([_VERSION]) + body + self._mac(request, namespace, body)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def resume(self, request: Message, namespace: str, *shape: type[int] | type[str]) -> Position | None:
        """Return the position `request.page_token` resumes after, None for the first page.

        `shape` is the type of each part of the position. Raise InvalidArgument naming `page_token` for any
        token this codec did not issue for this listing, namespace and query.
        """
        token: str = getattr(request, _FIELD)
        if not token:
            return None
        if len(token) > _MAX_TOKEN_CHARS or not token.isascii() or _TOKEN_SHAPE.fullmatch(token) is None:
            raise _invalid()
        try:
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise _invalid() from None
        if len(sealed) <= 1 + _MAC_BYTES:
            raise _invalid()
        if sealed[0] != _VERSION:
            raise _invalid("was issued by another version of stord; list again from the first page")
        body, mac = sealed[1:-_MAC_BYTES], sealed[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(request, namespace, body)):
            raise _invalid()
        # Authentic from here on: the body is one this codec wrote, checked again as a second line.
        try:
            parts = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _invalid() from None
        if not isinstance(parts, list) or len(parts) != len(shape):
            raise _invalid()
        position = tuple(_checked_part(part) for part in parts)
        if any(type(part) is not kind for part, kind in zip(position, shape, strict=True)):
            raise _invalid()
        return position

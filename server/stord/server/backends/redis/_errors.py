from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from redis import exceptions

from stord.server.ports import Unavailable

_P = ParamSpec("_P")
_T = TypeVar("_T")

# BusyLoadingError is a ConnectionError in redis-py; named anyway because "Redis is loading its dataset" is a
# distinct, retryable case. Every other RedisError (a bug, a wrong type, out of memory) propagates unchanged.
_UNAVAILABLE = (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.BusyLoadingError)


@contextmanager
def unavailable_on_connection_errors() -> Iterator[None]:
    """Turn redis-py's connection, timeout and loading errors into Unavailable."""
    try:
        yield
    except _UNAVAILABLE as error:
        raise Unavailable(f"Redis cannot serve now: {error}") from error


def translate_errors(method: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Wrap a coroutine function in `unavailable_on_connection_errors`."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with unavailable_on_connection_errors():
            return await method(*args, **kwargs)

    return wrapper

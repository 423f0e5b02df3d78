"""How the daemon's process takes its stop signals: SIGTERM and SIGINT ask it to stop, and are ignored once
it has stopped and is about to exit."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType

__all__ = ["ignore_signals_until_exit", "on_stop_signals"]

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signals(loop: asyncio.AbstractEventLoop, request_stop: Callable[[], None]) -> None:
    """Have each SIGTERM and SIGINT call `request_stop` on the loop.

    Not through `loop.add_signal_handler`: taking those handlers away restores the default actions (SIGINT's
    raises KeyboardInterrupt for a signal still pending), and a signal arriving then kills the process. The
    loop's SIGHUP handler sets the wakeup fd that wakes the loop for these signals too.
    """

    def handle(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(request_stop)  # Python runs this on the loop's thread, between two steps

    for signum in _STOP_SIGNALS:
        signal.signal(signum, handle)


def ignore_signals_until_exit(loop: asyncio.AbstractEventLoop) -> None:
    """Ignore SIGTERM, SIGINT and SIGHUP from now on: the daemon has stopped and the process is about to exit.

    SIG_IGN rather than a Python handler, which the interpreter resets to the default action as it finalizes.
    """
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)  # one step from handled to ignored, never the default between
    loop.remove_signal_handler(signal.SIGHUP)  # this one does restore the default action, for an instant
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

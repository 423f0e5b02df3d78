"""Reading TailEvents streams in tests: bounded waits, and checks of what a tail delivered."""

from __future__ import annotations

import threading

from stord.client import EventTail
from stord.v1 import events_pb2

__all__ = ["assert_chains_in_order", "receive"]


def receive(tail: EventTail, count: int, timeout: float = 60) -> list[events_pb2.Event]:
    """Return the next `count` events the tail delivers; fail if they do not come in time.

    At the deadline the tail is closed, which ends a wait for a delivery that never comes.
    """
    received: list[events_pb2.Event] = []
    watchdog = threading.Timer(timeout, tail.close)
    watchdog.start()
    try:
        for delivery in tail:
            received += delivery
            if len(received) >= count:
                break
    finally:
        watchdog.cancel()
    assert len(received) == count, f"the tail delivered {len(received)} of {count} events in {timeout} s"
    return received


def assert_chains_in_order(events: list[events_pb2.Event]) -> None:
    """Each session's events come in chain order from its first event, with none missing or repeated."""
    last_hash: dict[str, str] = {}
    for event in events:
        assert event.prev_hash == last_hash.get(event.session_id, ""), f"{event.id} out of chain order"
        last_hash[event.session_id] = event.hash

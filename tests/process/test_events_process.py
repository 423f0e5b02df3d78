"""A `stord serve` killed with SIGKILL in the middle of a long ingest loses nothing acknowledged or resent."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from stord.client import AsyncEventIngestor, Client, EventIngestor, IngestProgress, make_event
from tests.harness.served import Served

pytestmark = pytest.mark.process

EVENTS = 20_000
SESSIONS = 8
KILL_AFTER = 5_000
"""Acknowledged events after which the daemon is killed: the ingest is well under way, far from done."""


def _ingest(address: str, watch: Callable[[IngestProgress], None], added: Counter[str]) -> IngestProgress:
    with EventIngestor(address, batch_size=250, max_in_flight=4, on_progress=watch) as ingestor:
        for index in range(EVENTS):
            session = f"session-{index % SESSIONS}"
            ingestor.add(make_event(session, "agent", "tool_call", payload={"index": index}))
            added[session] += 1
        ingestor.flush()
        return ingestor.progress()


def _ingest_async(
    address: str, watch: Callable[[IngestProgress], None], added: Counter[str]
) -> IngestProgress:
    async def ingest() -> IngestProgress:
        async with AsyncEventIngestor(
            address, batch_size=250, max_in_flight=4, on_progress=watch
        ) as ingestor:
            for index in range(EVENTS):
                session = f"session-{index % SESSIONS}"
                await ingestor.add(make_event(session, "agent", "tool_call", payload={"index": index}))
                added[session] += 1
            await ingestor.flush()
            return ingestor.progress()

    return asyncio.run(ingest())


@pytest.mark.parametrize("ingest", [_ingest, _ingest_async], ids=["sync", "async"])
def test_ingest_resumes_after_sigkill_and_stores_every_event_once(
    tmp_path: Path, ingest: Callable[[str, Callable[[IngestProgress], None], Counter[str]], IngestProgress]
) -> None:
    data_dir = tmp_path / "data"
    daemons = [Served(data_dir)]
    address = daemons[0].address
    under_way = threading.Event()

    def watch(progress: IngestProgress) -> None:
        if progress.acknowledged >= KILL_AFTER:
            under_way.set()

    def kill_and_restart() -> None:
        under_way.wait(60)
        daemons[0].stop(signal.SIGKILL)
        daemons.append(Served(data_dir, port=daemons[0].port))

    chaos = threading.Thread(target=kill_and_restart)
    chaos.start()
    added: Counter[str] = Counter()
    try:
        progress = ingest(address, watch, added)
        chaos.join()
        assert len(daemons) == 2, "the daemon was not killed during the ingest"
        assert progress.reconnects >= 1
        assert (progress.added, progress.acknowledged) == (EVENTS, EVENTS)
        with Client(address, timeout=30) as client:
            assert client.events.count() == EVENTS
            for session, count in added.items():
                timeline = list(client.events.timeline(session))
                indexes = [int(event.payload.fields["index"].number_value) for event in timeline]
                assert len(indexes) == len(set(indexes)) == count, session
                verified = client.events.verify_chain(session)
                assert (verified.valid, verified.checked_events) == (True, count), verified.reason
                assert client.events.get_session(session).event_count == count
    finally:
        chaos.join(60)
        for daemon in daemons:
            daemon.stop(signal.SIGTERM)

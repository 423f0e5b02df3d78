"""PostgreSQL and Redis over a slow, lossy link: 200 ms more per round trip and 5% of packets dropped.

The servers run in a network namespace whose nftables rules drop 5% of the packets each way; the daemon
reaches them through `DelayProxy`s that hold every chunk 100 ms each way (this kernel has no `sch_netem`).
The daemon starts over the fast link (migrating takes a few hundred round trips) and then serves over the
slow one, with the default link settings. Every contract must still answer correctly; the test prints
throughput through stord beside the raw client doing the same work over the same link, in the same run.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis as redis_py

from stord.client import Client, EnqueueJob, EventIngestor, UpdateDocument, make_event, new_event_id
from tests.harness.network import DelayProxy, IsolatedHost
from tests.harness.postgres import PostgresServer
from tests.harness.redis import RedisServer
from tests.harness.served import Served

pytestmark = pytest.mark.process

ONE_WAY_DELAY = 0.1
LOSS_PERCENT = 5
MEASURE_SECONDS = float(os.environ.get("STORD_FAULTS_MEASURE_SECONDS", "1"))
"""Seconds each throughput figure is measured for; `make soak-faults` measures longer."""
THREADS = 8
"""Concurrent callers: over a slow link throughput comes from calls in flight, not from speed."""


@dataclass
class SlowLink:
    """The URLs through which the daemon and the raw clients reach the servers, and the link's controls."""

    database: str
    cache: str
    isolated: IsolatedHost
    proxies: tuple[DelayProxy, ...]

    def slow_down(self) -> None:
        """Add the delay and the loss (the link starts fast, so that the daemon starts quickly)."""
        for proxy in self.proxies:
            proxy.delay = ONE_WAY_DELAY
        self.isolated.lose(LOSS_PERCENT)


@pytest.fixture
def slow_link(isolated: IsolatedHost, postgres: PostgresServer, redis: RedisServer) -> Iterator[SlowLink]:
    postgres.create_database("stord")
    database_proxy = DelayProxy(isolated.address, postgres.port, delay=0).start()
    cache_proxy = DelayProxy(isolated.address, redis.port, delay=0).start()
    try:
        yield SlowLink(
            database=f"postgresql://postgres@127.0.0.1:{database_proxy.port}/stord",
            cache=f"redis://127.0.0.1:{cache_proxy.port}/0",
            isolated=isolated,
            proxies=(database_proxy, cache_proxy),
        )
    finally:
        isolated.heal()
        database_proxy.stop()
        cache_proxy.stop()


def rate(work: Callable[[int, int], None], seconds: float = MEASURE_SECONDS) -> float:
    """Run `work(thread, count)` in `THREADS` threads for `seconds`; return calls per second."""
    done = [0] * THREADS
    stop = threading.Event()

    def run(thread: int) -> None:
        while not stop.is_set():
            work(thread, done[thread])
            done[thread] += 1

    threads = [threading.Thread(target=run, args=(index,)) for index in range(THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(60)
    return sum(done) / (time.monotonic() - started)


def _key_value(client: Client, address: str) -> None:
    values = {f"k{i}": b"v%d" % i for i in range(20)}
    client.db.set_many(values)
    assert client.db.get_many(list(values)) == list(values.values())
    for i in range(5):
        assert client.db.append("log", b"%d" % i) == i + 1
    assert client.db.get_range("log", 0, 5) == [b"%d" % i for i in range(5)]
    for i in range(5):
        client.cache.set(f"c{i}", b"%d" % i, ttl=60)
    assert [client.cache.get(f"c{i}") for i in range(5)] == [b"%d" % i for i in range(5)]


def _documents(client: Client, address: str) -> None:
    plans = [client.documents.create("plans", {"n": i, "status": "draft"}) for i in range(5)]
    client.documents.transact(
        [
            UpdateDocument("plans", plan.id, {"status": "ready"}, expected_revision=plan.revision)
            for plan in plans
        ]
    )
    assert client.documents.count("plans", where=[("status", "eq", "ready")]) == 5


def _jobs(client: Client, address: str) -> None:
    client.jobs.enqueue_many([EnqueueJob("slow", {"n": i}) for i in range(50)])
    completed = 0
    while completed < 50:
        jobs = client.jobs.dequeue("slow", max_jobs=20, lease=30, wait=1)
        client.jobs.acknowledge(jobs)
        completed += len(jobs)
    assert client.jobs.stats("slow").completed == 50


def _agents(client: Client, address: str) -> None:
    for version in ("v1", "v2", "v3"):
        client.agents.set("agent", name=version)
        assert (agent := client.agents.get("agent")) is not None
        assert agent.name == version


def _events(client: Client, address: str) -> None:
    # A batch takes about a dozen round trips (chain lock, COPY, sessions, feed, commit): few, large ones.
    ids = [new_event_id() for _ in range(600)]
    with EventIngestor(address, namespace="events", batch_size=300) as ingestor:
        for event_id in ids:
            ingestor.add(make_event("slow", "agent-1", "tool_call", event_id=event_id))
        ingestor.flush(timeout=120)
    assert sorted(event.id for event in client.events.timeline("slow")) == sorted(ids)
    assert client.events.verify_chain("slow").valid


CONTRACTS = [_key_value, _documents, _jobs, _agents, _events]
"""Writes through every contract, read back: run at once, each in a namespace of its own (the link is
slow, not busy)."""


def _check_every_contract(address: str) -> None:
    def check(contract: Callable[[Client, str], None]) -> None:
        namespace = contract.__name__.strip("_").replace("_", "-")
        with Client(address, namespace=namespace, timeout=60, retry=None) as client:
            contract(client, address)

    with concurrent.futures.ThreadPoolExecutor(len(CONTRACTS)) as pool:
        for done in pool.map(check, CONTRACTS):
            assert done is None


def test_slow_lossy_link_is_correct_and_measured(slow_link: SlowLink, tmp_path: Path) -> None:
    config = tmp_path / "stord.yaml"
    config.write_text("health_check_interval: 1\n")
    daemon = Served(
        tmp_path / "data",
        "--database",
        slow_link.database,
        "--cache",
        slow_link.cache,
        "--config",
        str(config),
    )
    slow_link.slow_down()
    try:
        checking = time.monotonic()
        clients = [Client(daemon.address, namespace="slow", timeout=30, retry=None) for _ in range(THREADS)]
        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:  # a connection takes 4 round trips
            raw_databases = list(
                pool.map(lambda _: psycopg.connect(slow_link.database, autocommit=True), range(THREADS))
            )
        raw_cache = redis_py.Redis.from_url(slow_link.cache, max_connections=THREADS)
        try:
            _check_every_contract(daemon.address)
            print(f"every contract checked in {time.monotonic() - checking:.1f} s")
            raw_databases[0].execute("CREATE TABLE raw_kv (k text PRIMARY KEY, v bytea NOT NULL)")

            def stord_database(thread: int, count: int) -> None:
                key = f"t{thread}-{count % 100}"
                clients[thread].db.set(key, b"x" * 100)
                assert clients[thread].db.get(key) == b"x" * 100

            def raw_database(thread: int, count: int) -> None:
                key = f"t{thread}-{count % 100}"
                connection = raw_databases[thread]
                connection.execute(
                    "INSERT INTO raw_kv (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                    (key, b"x" * 100),
                )
                row = connection.execute("SELECT v FROM raw_kv WHERE k = %s", (key,)).fetchone()
                assert row is not None

            def stord_cache(thread: int, count: int) -> None:
                key = f"t{thread}-{count % 100}"
                clients[thread].cache.set(key, b"x" * 100, ttl=60)
                assert clients[thread].cache.get(key) == b"x" * 100

            def raw_redis(thread: int, count: int) -> None:
                key = f"raw:t{thread}-{count % 100}"
                raw_cache.set(key, b"x" * 100, ex=60)
                assert raw_cache.get(key) == b"x" * 100

            rate(stord_database, seconds=1)  # the daemon's pool grows to a connection per thread
            figures = {
                "database set+get (PostgreSQL)": (rate(stord_database), rate(raw_database)),
                "cache set+get (Redis)": (rate(stord_cache), rate(raw_redis)),
            }
        finally:
            for client in clients:
                client.close()
            for connection in raw_databases:
                connection.close()
            raw_cache.close()
        load = os.getloadavg()[0]
        print(
            f"\n{THREADS} threads, {MEASURE_SECONDS:g} s each,"
            f" +{2 * ONE_WAY_DELAY * 1000:.0f} ms per round trip, {LOSS_PERCENT}% loss each way,"
            f" load average {load:.2f}:"
        )
        for name, (stord, raw) in figures.items():
            print(f"  {name}: stord {stord:.1f}/s, raw {raw:.1f}/s, ratio {stord / raw:.2f}")
            assert stord > 0
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        if daemon.process.poll() is None:
            daemon.stop(signal.SIGKILL)

"""Mixed traffic against a daemon that may die at any moment, and a ledger of what it acknowledged.

Each workload runs in a thread of its own, one call at a time, until it is told to stop or a call fails (the
daemon was killed). Before every write it records the write as *in flight*; once the write is acknowledged it
moves it to the acknowledged record. So after a crash the ledger knows which writes must be there (every
acknowledged one) and which may or may not be (the one in flight per thread, all or nothing). `verify` checks
a restarted daemon against the ledger; it covers every round so far, so a later round cannot hide a loss.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stord.client import (
    Client,
    Conflict,
    CreateDocument,
    EnqueueJob,
    JobStatus,
    StordError,
    TransactStep,
    UpdateDocument,
    make_event,
    new_event_id,
)

__all__ = ["Events", "JobLedger", "JobProducer", "JobWorker", "KeyValue", "Transfers", "Workload"]

LEASE = 1.0
"""Seconds a dequeued job is leased: a job leased when the daemon died comes back this soon after."""

MAX_ATTEMPTS = 100
"""High enough that no job fails for running out of attempts, however often its daemon is killed."""


class Workload:
    """One thread's traffic; subclasses define `step` (one call) and `verify`."""

    name = "workload"

    def __init__(self) -> None:
        self.failures: list[StordError] = []
        """The call that ended the current round, if one failed (the daemon died under it)."""
        self.acknowledged = 0
        """Calls acknowledged in the current round."""

    def run(self, client: Client, round_: int, stop: threading.Event) -> None:
        """Call `step` until `stop` is set or a call fails."""
        self.acknowledged = 0
        self.failures = []
        step = 0
        while not stop.is_set():
            try:
                self.step(client, round_, step)
            except StordError as error:
                self.failures.append(error)
                return
            except ValueError:  # the channel was closed under the call: the daemon is gone
                if not stop.is_set():
                    raise
                return
            self.acknowledged += 1
            step += 1

    def step(self, client: Client, round_: int, step: int) -> None:
        raise NotImplementedError

    def verify(self, client: Client) -> None:
        raise NotImplementedError


def _chunks(items: Sequence[str], size: int = 1000) -> Iterable[Sequence[str]]:
    return (items[start : start + size] for start in range(0, len(items), size))


class KeyValue(Workload):
    """Set, Append and MSet on the database key-value store; MSet batches must be all or nothing."""

    name = "key-value"
    MSET_SIZE = 10

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, bytes] = {}
        self.in_flight: list[dict[str, bytes]] = []
        """Set and MSet calls that got no answer: each all there or all absent."""
        self.lists: dict[str, list[bytes]] = collections.defaultdict(list)
        self.appending: dict[str, list[bytes]] = collections.defaultdict(list)
        """Per list, the appends that got no answer (at most one per round, its last)."""

    def step(self, client: Client, round_: int, step: int) -> None:
        if step % 3 == 1:
            key, value = f"list/{round_}", b"%d" % step
            self.appending[key].append(value)
            client.db.append(key, value)
            self.appending[key].pop()
            self.lists[key].append(value)
            return
        size = 1 if step % 3 == 0 else self.MSET_SIZE
        batch = {f"kv/{round_}/{step}/{index}": b"%d.%d.%d" % (round_, step, index) for index in range(size)}
        self.in_flight.append(batch)
        if size == 1:
            ((key, value),) = batch.items()
            client.db.set(key, value)
        else:
            client.db.set_many(batch)
        self.in_flight.pop()
        self.values.update(batch)

    def verify(self, client: Client) -> None:
        keys = sorted(self.values)
        for chunk in _chunks(keys):
            stored = client.db.get_many(chunk)
            lost = [key for key, value in zip(chunk, stored, strict=True) if value != self.values[key]]
            assert not lost, f"acknowledged key-value writes lost or changed: {lost[:10]}"
        for batch in self.in_flight:
            found = client.db.get_many(batch)
            present = [value for value in found if value is not None]
            assert present in ([], list(batch.values())), f"a batch in flight was partly stored: {found}"
        for key in sorted(set(self.lists) | set(self.appending)):
            acknowledged, unanswered = self.lists[key], self.appending[key]
            contents = client.db.get_range(key)
            allowed = [acknowledged + unanswered[:count] for count in range(len(unanswered) + 1)]
            assert contents in allowed, f"list {key}: holds {contents[-5:]}, acknowledged {acknowledged[-5:]}"


class Transfers(Workload):
    """Transactions moving an amount between two accounts, recording the transfer and enqueueing its audit.

    Every transaction updates both accounts at their read revisions, creates the transfer document and
    enqueues an audit job, all or nothing. A partial transaction would break the total, an account's revision
    count, or the one-to-one match between transfers and audit jobs.
    """

    name = "transfers"
    ACCOUNTS = ("a0", "a1", "a2", "a3")
    OPENING_BALANCE = 100

    def __init__(self, seed: int) -> None:
        super().__init__()
        self._random = random.Random(seed)
        self.acknowledged_ids: set[str] = set()
        self.in_flight: list[str] = []

    def open_accounts(self, client: Client) -> None:
        """Create the accounts; call once, before the first round."""
        for account in self.ACCOUNTS:
            client.documents.create("accounts", {"balance": self.OPENING_BALANCE}, id=account)

    def step(self, client: Client, round_: int, step: int) -> None:
        source, target = self._random.sample(self.ACCOUNTS, 2)
        amount = self._random.randint(1, 10)
        debit, credit = client.documents.get("accounts", source), client.documents.get("accounts", target)
        assert debit is not None
        assert credit is not None
        transfer = f"t-{round_}-{step}"
        steps: list[TransactStep] = [
            UpdateDocument(
                "accounts",
                source,
                {"balance": debit.data["balance"] - amount},
                expected_revision=debit.revision,
            ),
            UpdateDocument(
                "accounts",
                target,
                {"balance": credit.data["balance"] + amount},
                expected_revision=credit.revision,
            ),
            CreateDocument("transfers", {"from": source, "to": target, "amount": amount}, id=transfer),
            EnqueueJob("audit", {"transfer": transfer}, max_attempts=MAX_ATTEMPTS),
        ]
        self.in_flight.append(transfer)
        try:
            client.documents.transact(steps)
        except Conflict:  # another writer got there first: nothing was applied
            self.in_flight.pop()
            return
        self.in_flight.pop()
        self.acknowledged_ids.add(transfer)

    def verify(self, client: Client) -> None:
        transfers = {document.id: document.data for document in client.documents.find_all("transfers")}
        missing = self.acknowledged_ids - transfers.keys()
        assert not missing, f"acknowledged transactions lost: {sorted(missing)[:10]}"
        unknown = transfers.keys() - self.acknowledged_ids - set(self.in_flight)
        assert not unknown, f"transfers nobody made: {sorted(unknown)[:10]}"
        balances = dict.fromkeys(self.ACCOUNTS, self.OPENING_BALANCE)
        touched: collections.Counter[str] = collections.Counter()
        for data in transfers.values():
            balances[data["from"]] -= data["amount"]
            balances[data["to"]] += data["amount"]
            touched.update([data["from"], data["to"]])
        for account in self.ACCOUNTS:
            document = client.documents.get("accounts", account)
            assert document is not None
            assert (document.data["balance"], document.revision) == (
                balances[account],
                1 + touched[account],
            ), f"account {account} does not match its transfers: partial transaction visible"
        audited = collections.Counter(job.payload["transfer"] for job in client.jobs.find("audit"))
        assert audited == collections.Counter(transfers.keys()), (
            "audit jobs do not match transfers one to one"
        )


class Events(Workload):
    """InsertEvents batches into a few sessions whose hash chains run across every restart."""

    name = "events"
    SESSIONS = ("s0", "s1", "s2")
    BATCH = 20

    def __init__(self) -> None:
        super().__init__()
        self.stored: dict[str, list[str]] = collections.defaultdict(list)
        self.in_flight: dict[str, list[list[str]]] = collections.defaultdict(list)

    def step(self, client: Client, round_: int, step: int) -> None:
        session = self.SESSIONS[step % len(self.SESSIONS)]
        batch = [
            make_event(
                session,
                "agent-1",
                "tool_call",
                payload={"round": round_, "step": step, "index": index},
                event_id=new_event_id(),
            )
            for index in range(self.BATCH)
        ]
        ids = [event.id for event in batch]
        self.in_flight[session].append(ids)
        client.events.insert(batch)
        self.in_flight[session].pop()
        self.stored[session].extend(ids)

    def verify(self, client: Client) -> None:
        for session in self.SESSIONS:
            timeline = [event.id for event in client.events.timeline(session)]
            assert len(timeline) == len(set(timeline)), f"session {session} holds an event twice"
            stored = set(timeline)
            missing = set(self.stored[session]) - stored
            assert not missing, f"session {session}: acknowledged events lost: {sorted(missing)[:5]}"
            extra = stored - set(self.stored[session])
            for batch in self.in_flight[session]:
                kept = extra & set(batch)
                assert kept in (set(), set(batch)), f"session {session}: a batch in flight was partly stored"
                extra -= kept
            assert not extra, f"session {session}: events nobody sent: {sorted(extra)[:5]}"
            if not timeline:
                continue  # no session yet
            verified = client.events.verify_chain(session)
            assert (verified.valid, verified.checked_events) == (True, len(timeline)), verified.reason


class JobLedger:
    """What the producer and the worker of the `work` queue were told, and checks of every job against it."""

    QUEUE = "work"

    def __init__(self) -> None:
        self.enqueued: set[str] = set()
        self.enqueuing: list[list[tuple[int, int, int]]] = []
        """Enqueue batches that got no answer, by payload (their ids were never returned)."""
        self.completed: set[str] = set()
        self.completing: set[str] = set()
        self.redelivered_after_completion: list[str] = []

    def verify(self, client: Client) -> dict[str, JobStatus]:
        """Check every job against the ledger and return the status of each."""
        jobs = list(client.jobs.find(self.QUEUE))
        statuses = {job.id: job.status for job in jobs}
        payloads = collections.Counter(_payload_key(job.payload) for job in jobs)
        assert all(count == 1 for count in payloads.values()), "a job was enqueued twice"
        missing = self.enqueued - statuses.keys()
        assert not missing, f"acknowledged enqueues lost: {sorted(missing)[:10]}"
        for batch in self.enqueuing:
            kept = [key for key in batch if key in payloads]
            assert kept in ([], batch), "an enqueue batch in flight was partly stored"
        not_completed = [job for job in self.completed if statuses[job] is not JobStatus.COMPLETED]
        assert not not_completed, f"acknowledged completions lost: {not_completed[:10]}"
        assert JobStatus.FAILED not in statuses.values()
        assert not self.redelivered_after_completion, "a completed job was handed out again"
        return statuses

    def drain(self, client: Client, timeout: float = 30) -> None:
        """Work the queue until every job is completed (leases taken by a killed daemon run out first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = client.jobs.stats(self.QUEUE)
            if stats.pending == stats.running == stats.retrying == 0:
                self.verify(client)
                return
            jobs = client.jobs.dequeue(self.QUEUE, max_jobs=100, lease=LEASE, wait=0.5)
            if jobs:
                client.jobs.acknowledge(jobs)
                self.completed.update(job.id for job in jobs)
        raise AssertionError(f"jobs still unfinished after {timeout} s: {client.jobs.stats(self.QUEUE)}")


def _payload_key(payload: Mapping[str, Any]) -> tuple[int, int, int]:
    return (int(payload["round"]), int(payload["step"]), int(payload["index"]))


class JobProducer(Workload):
    """Enqueues batches of jobs into the ledger's queue."""

    name = "job-producer"
    BATCH = 5

    def __init__(self, ledger: JobLedger) -> None:
        super().__init__()
        self.ledger = ledger

    def step(self, client: Client, round_: int, step: int) -> None:
        keys = [(round_, step, index) for index in range(self.BATCH)]
        jobs = [
            EnqueueJob(
                JobLedger.QUEUE,
                {"round": round_, "step": step, "index": index},
                max_attempts=MAX_ATTEMPTS,
            )
            for round_, step, index in keys
        ]
        self.ledger.enqueuing.append(keys)
        enqueued = client.jobs.enqueue_many(jobs)
        self.ledger.enqueuing.pop()
        self.ledger.enqueued.update(job.job_id for job in enqueued)

    def verify(self, client: Client) -> None:
        self.ledger.verify(client)


class JobWorker(Workload):
    """Dequeues and acknowledges jobs of the ledger's queue."""

    name = "job-worker"

    def __init__(self, ledger: JobLedger) -> None:
        super().__init__()
        self.ledger = ledger

    def step(self, client: Client, round_: int, step: int) -> None:
        jobs = client.jobs.dequeue(JobLedger.QUEUE, max_jobs=5, lease=LEASE, wait=0.2)
        ledger = self.ledger
        ledger.redelivered_after_completion.extend(job.id for job in jobs if job.id in ledger.completed)
        if not jobs:
            return
        ids = {job.id for job in jobs}
        ledger.completing |= ids
        client.jobs.acknowledge(jobs)
        ledger.completing -= ids
        ledger.completed |= ids

    def verify(self, client: Client) -> None:
        self.ledger.verify(client)

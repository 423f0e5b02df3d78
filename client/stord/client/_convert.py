"""Conversions between messages and Python values for both clients: times, JSON, documents and jobs.

Times go out as aware datetimes or seconds since the epoch (`timestamp`; naive datetimes are refused) and
come back as aware datetimes in UTC (`moment`). The events modules keep a copy of `timestamp` with the same
rule until they move onto this one.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.struct_pb2 import NullValue, Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp

from stord.client import _codec
from stord.client._models import (
    CreateDocument,
    DeleteDocument,
    Document,
    EnqueuedJob,
    EnqueueJob,
    Filter,
    Job,
    JobStatus,
    QueueStats,
    TransactStep,
    UpdateDocument,
)
from stord.v1 import documents_pb2, jobs_pb2

_EXACT_INTEGERS = 2**53

_OPERATORS = {
    "eq": documents_pb2.FILTER_OPERATOR_EQ,
    "ne": documents_pb2.FILTER_OPERATOR_NE,
    "in": documents_pb2.FILTER_OPERATOR_IN,
    "gt": documents_pb2.FILTER_OPERATOR_GT,
    "gte": documents_pb2.FILTER_OPERATOR_GTE,
    "lt": documents_pb2.FILTER_OPERATOR_LT,
    "lte": documents_pb2.FILTER_OPERATOR_LTE,
}

_STATUSES = {
    JobStatus.PENDING: jobs_pb2.JOB_STATUS_PENDING,
    JobStatus.RUNNING: jobs_pb2.JOB_STATUS_RUNNING,
    JobStatus.RETRYING: jobs_pb2.JOB_STATUS_RETRYING,
    JobStatus.COMPLETED: jobs_pb2.JOB_STATUS_COMPLETED,
    JobStatus.FAILED: jobs_pb2.JOB_STATUS_FAILED,
}
_STATUSES_FROM_PROTO = {message: status for status, message in _STATUSES.items()}


def struct(data: Mapping[str, Any] | None) -> Struct:
    """Return a JSON object as a Struct."""
    message = Struct()
    if data:
        message.update(data)
    return message


def value(item: Any) -> Value:
    """Return a JSON value as a protobuf Value."""
    message = Value()
    if isinstance(item, list | tuple):
        message.list_value.extend(item)
    elif isinstance(item, Mapping):
        message.struct_value.update(item)
    elif item is None:
        message.null_value = NullValue.NULL_VALUE
    elif isinstance(item, bool):
        message.bool_value = item
    elif isinstance(item, int | float):
        message.number_value = item
    else:
        message.string_value = item
    return message


def _plain(item: Value) -> Any:
    kind = item.WhichOneof("kind")
    if kind == "struct_value":
        return from_struct(item.struct_value)
    if kind == "list_value":
        return [_plain(element) for element in item.list_value.values]
    if kind == "number_value":
        number = item.number_value
        # JSON has one number type; whole numbers come back as ints, as they were most likely sent.
        if math.isfinite(number) and number.is_integer() and abs(number) < _EXACT_INTEGERS:
            return int(number)
        return number
    if kind == "string_value":
        return item.string_value
    if kind == "bool_value":
        return item.bool_value
    return None


def from_struct(message: Struct) -> dict[str, Any]:
    """Return a Struct as a JSON object, whole numbers as ints."""
    return {key: _plain(item) for key, item in message.fields.items()}


def timestamp(value: datetime.datetime | float) -> Timestamp:
    """Return an aware datetime, or seconds since the epoch, as a Timestamp.

    A naive datetime raises ValueError: whether it means UTC or local time is a guess the client does not
    make (every contract alike; `datetime.datetime.now(datetime.UTC)` is the usual fix).
    """
    message = Timestamp()
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous: give a timezone, e.g. datetime.UTC")
        message.FromDatetime(value)
    else:
        message.FromNanoseconds(round(value * 1e9))
    return message


def moment(message: Timestamp) -> datetime.datetime:
    """Return a Timestamp as an aware datetime in UTC."""
    return message.ToDatetime(tzinfo=datetime.UTC)


def filters(where: Iterable[Filter]) -> list[documents_pb2.DocumentFilter]:
    """Return (field, operator, value) conditions as filter messages."""
    messages: list[documents_pb2.DocumentFilter] = []
    for field, operator, item in where:
        if operator not in _OPERATORS:
            raise ValueError(f"unknown filter operator {operator!r}; use one of {', '.join(_OPERATORS)}")
        messages.append(
            documents_pb2.DocumentFilter(field=field, operator=_OPERATORS[operator], value=value(item))
        )
    return messages


def order(order_by: Iterable[str]) -> list[documents_pb2.DocumentOrder]:
    """Return sort keys, `-field` for descending, as order messages."""
    return [
        documents_pb2.DocumentOrder(field=key.removeprefix("-"), descending=key.startswith("-"))
        for key in order_by
    ]


def document(message: documents_pb2.Document) -> Document:
    """Return a Document message as a Document."""
    return Document(
        collection=message.collection,
        id=message.id,
        revision=message.revision,
        create_time=moment(message.create_time),
        update_time=moment(message.update_time),
        data=from_struct(message.data),
    )


def _json_object_text(data: Mapping[str, Any] | None) -> str | None:
    """Return a payload as JSON text; None when JSON cannot carry it as is (NaN, keys that are not text)."""
    if not data:
        return None
    try:
        return json.dumps(data, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return None  # the Struct path converts or refuses it, and the server names the field


def new_job(job: EnqueueJob) -> jobs_pb2.NewJob:
    """Return a job to enqueue as its message, the payload as JSON text (cheaper than a Struct)."""
    text = _json_object_text(job.payload)
    return jobs_pb2.NewJob(
        queue=job.queue,
        payload=struct(job.payload) if text is None else None,
        payload_json=text or "",
        run_at=None if job.run_at is None else timestamp(job.run_at),
        delay=_codec.duration(job.delay),
        priority=job.priority,
        max_attempts=job.max_attempts,
        dedupe_key=job.dedupe_key or "",
    )


def job(message: jobs_pb2.Job) -> Job:
    """Return a Job message as a Job."""
    return Job(
        id=message.id,
        queue=message.queue,
        payload=json.loads(message.payload_json) if message.payload_json else from_struct(message.payload),
        status=_STATUSES_FROM_PROTO[message.status],
        priority=message.priority,
        run_at=moment(message.run_at),
        attempts=message.attempts,
        max_attempts=message.max_attempts,
        dedupe_key=message.dedupe_key or None,
        last_error=message.last_error or None,
        create_time=moment(message.create_time),
        update_time=moment(message.update_time),
        lease_expire_time=moment(message.lease_expire_time)
        if message.HasField("lease_expire_time")
        else None,
        lease_token=message.lease_token or None,
    )


def leases(jobs: Iterable[Job]) -> list[jobs_pb2.JobLease]:
    """Return the leases of dequeued jobs."""
    messages: list[jobs_pb2.JobLease] = []
    for leased in jobs:
        if leased.lease_token is None:
            raise ValueError(f"job {leased.id} carries no lease token: pass the Job that dequeue returned")
        messages.append(jobs_pb2.JobLease(job_id=leased.id, lease_token=leased.lease_token))
    return messages


def statuses(selected: Iterable[JobStatus | str]) -> list[jobs_pb2.JobStatus.ValueType]:
    """Return job statuses as their proto values."""
    return [_STATUSES[JobStatus(status)] for status in selected]


def enqueued(message: jobs_pb2.EnqueuedJob) -> EnqueuedJob:
    return EnqueuedJob(job_id=message.job_id, deduplicated=message.deduplicated)


def stats(message: jobs_pb2.GetQueueStatsResponse) -> QueueStats:
    return QueueStats(
        pending=message.pending,
        running=message.running,
        retrying=message.retrying,
        completed=message.completed,
        failed=message.failed,
    )


def operation(step: TransactStep) -> documents_pb2.TransactOperation:
    """Return a transaction step as its message."""
    if isinstance(step, CreateDocument):
        create = documents_pb2.CreateDocumentRequest(
            collection=step.collection, document_id=step.id or "", data=struct(step.data)
        )
        return documents_pb2.TransactOperation(create=create)
    if isinstance(step, UpdateDocument):
        update = documents_pb2.UpdateDocumentRequest(
            collection=step.collection,
            document_id=step.id,
            data=struct(step.data),
            expected_revision=step.expected_revision,
        )
        return documents_pb2.TransactOperation(update=update)
    if isinstance(step, DeleteDocument):
        delete = documents_pb2.DeleteDocumentRequest(
            collection=step.collection, document_id=step.id, expected_revision=step.expected_revision
        )
        return documents_pb2.TransactOperation(delete=delete)
    return documents_pb2.TransactOperation(enqueue=new_job(step))


def result(message: documents_pb2.TransactResult) -> Document | EnqueuedJob | bool:
    """Return a step's result: the Document, the EnqueuedJob, or True for a delete."""
    kind = message.WhichOneof("result")
    if kind == "document":
        return document(message.document)
    if kind == "job":
        return enqueued(message.job)
    return True

"""How both SQL dialects read a row of the jobs and agents tables into its domain value.

The select lists are the tables' (`tables.JOBS`, `tables.AGENTS`); the dialects differ only in how a JSON
column arrives (text on SQLite, already decoded from jsonb on PostgreSQL), which the caller says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from stord.server.agents.port import AgentStatus, AgentVisibility, StoredAgent
from stord.server.jobs.port import Job, JobStatus
from stord.server.ports import JsonObject

__all__ = ["read_job", "read_stored_agent"]


def read_job(row: Sequence[Any], *, with_token: bool = False) -> Job:
    """A job from its columns in table order (the payload as JSON text); its lease token only when asked."""
    return Job(
        sequence=row[0],
        id=row[1],
        queue=row[2],
        status=JobStatus(row[3]),
        priority=row[4],
        run_at=row[5],
        attempts=row[6],
        max_attempts=row[7],
        dedupe_key=row[8],
        payload=orjson.loads(row[9]),
        last_error=row[10],
        lease_token=row[11] if with_token else None,
        lease_expires_at=row[12],
        create_time=row[13],
        update_time=row[14],
    )


def read_stored_agent(
    configuration_of: Callable[[Any], JsonObject | None], row: Sequence[Any]
) -> StoredAgent:
    """An agent from its position and columns; `configuration_of` decodes the configuration column."""
    _, uri, name, version, status, visibility, owner, configuration, update_time = row
    return StoredAgent(
        uri=uri,
        name=name,
        version=version,
        status=AgentStatus(status),
        visibility=AgentVisibility(visibility),
        owner=owner,
        configuration=configuration_of(configuration),
        update_time=update_time,
    )

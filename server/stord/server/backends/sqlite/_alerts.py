"""Alert evaluation state and deliveries in SQLite (migration 0010), through the shared engine."""

from __future__ import annotations

import sqlite3

from stord.server.alerts.port import Delivery, RuleState
from stord.server.backends._alert_sql import DELIVERY_COLUMNS, delivery_from_row, delivery_values
from stord.server.backends._event_sql import SQLITE, Conditions, analytics_query, read_analytics
from stord.server.backends.sqlite._engine import SqliteEngine
from stord.server.events.port import AnalyticsFigures

_CREATE_STATE = """
INSERT INTO alert_evaluations (namespace, rule_id, slot, done_slot, lease_expires_at) VALUES (?, ?, -1, -1, 0)
ON CONFLICT DO NOTHING
"""
# The file's write lock makes this check-and-set atomic across daemons sharing the file.
_CLAIM = """
UPDATE alert_evaluations SET slot = :slot, lease_token = :token, lease_expires_at = :lease_until
WHERE namespace = :namespace AND rule_id = :rule_id AND done_slot < :slot AND slot <= :slot
  AND (slot < :slot OR lease_expires_at <= :now)
RETURNING alert_id, triggered_at
"""
_FINISH = """
UPDATE alert_evaluations SET done_slot = :slot, lease_token = NULL, alert_id = :alert_id,
    triggered_at = :triggered_at
WHERE namespace = :namespace AND rule_id = :rule_id AND slot = :slot AND lease_token = :token
"""
_RESOLVE = """
UPDATE event_alert_history SET resolved_at = ? WHERE namespace = ? AND id = ? AND resolved_at IS NULL
"""
_SAVE_DELIVERY = f"""
INSERT OR REPLACE INTO alert_deliveries (namespace, {DELIVERY_COLUMNS}) VALUES (?{", ?" * 9})
"""
_LIST_DELIVERIES = f"""
SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE namespace = ? AND alert_id = ?
ORDER BY CASE kind WHEN 'triggered' THEN 0 ELSE 1 END, channel
"""


class SqliteAlertStateStore:
    """Every write goes through the engine's one writer, so claims are decided one at a time."""

    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    async def rule_namespaces(self) -> list[str]:
        def read(connection: sqlite3.Connection) -> list[str]:
            rows = connection.execute("SELECT DISTINCT namespace FROM event_alert_rules ORDER BY namespace")
            return [row[0] for row in rows]

        return await self._engine.read(read)

    async def tagged_totals(
        self, namespace: str, *, from_time: int, to_time: int, agent_id: str | None, tags: tuple[str, ...]
    ) -> AnalyticsFigures:
        matching = Conditions(SQLITE)
        matching.add("namespace = {}", namespace)
        matching.add("timestamp BETWEEN {} AND {}", from_time, to_time)
        if agent_id is not None:
            matching.add("agent_id = {}", agent_id)
        listed = ", ".join("{}" for _ in tags)
        matching.add(
            "session_id IN (SELECT s.id FROM event_sessions AS s WHERE s.namespace = {} AND EXISTS"
            f" (SELECT 1 FROM json_each(s.tags) WHERE value IN ({listed})))",
            namespace,
            *sorted(tags),
        )
        sql = analytics_query(SQLITE, "0", matching.where())  # one bucket: only the totals are read

        def read(connection: sqlite3.Connection) -> AnalyticsFigures:
            return read_analytics(connection.execute(sql, matching.params).fetchall()).totals

        return await self._engine.read(read)

    async def claim_evaluation(
        self, namespace: str, rule_id: str, *, slot: int, token: str, now: int, lease_until: int
    ) -> RuleState | None:
        params = {"namespace": namespace, "rule_id": rule_id, "slot": slot, "token": token, "now": now,
                  "lease_until": lease_until}  # fmt: skip

        def write(connection: sqlite3.Connection) -> RuleState | None:
            connection.execute(_CREATE_STATE, (namespace, rule_id))
            row = connection.execute(_CLAIM, params).fetchone()
            return None if row is None else RuleState(row[0], row[1])

        return await self._engine.write(write)

    async def finish_evaluation(
        self, namespace: str, rule_id: str, *, slot: int, token: str, state: RuleState
    ) -> bool:
        params = {"namespace": namespace, "rule_id": rule_id, "slot": slot, "token": token,
                  "alert_id": state.alert_id, "triggered_at": state.triggered_at}  # fmt: skip

        def write(connection: sqlite3.Connection) -> bool:
            return connection.execute(_FINISH, params).rowcount == 1

        return await self._engine.write(write)

    async def resolve_alert(self, namespace: str, alert_id: str, resolved_at: int) -> None:
        def write(connection: sqlite3.Connection) -> None:
            connection.execute(_RESOLVE, (resolved_at, namespace, alert_id))

        await self._engine.write(write)

    async def save_delivery(self, namespace: str, delivery: Delivery) -> None:
        def write(connection: sqlite3.Connection) -> None:
            connection.execute(_SAVE_DELIVERY, (namespace, *delivery_values(delivery)))

        await self._engine.write(write)

    async def list_deliveries(self, namespace: str, alert_id: str) -> list[Delivery]:
        def read(connection: sqlite3.Connection) -> list[Delivery]:
            rows = connection.execute(_LIST_DELIVERIES, (namespace, alert_id)).fetchall()
            return [delivery_from_row(row) for row in rows]

        return await self._engine.read(read)

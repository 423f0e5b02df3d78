"""Alert evaluation state and deliveries in PostgreSQL (migration 0010).

A claim is one UPDATE of the rule's state row: PostgreSQL locks the row for it, and a daemon claiming at the
same moment re-reads the committed row and finds the interval taken. So every interval of every rule is
evaluated by one daemon, and the lease lets another take it over if that daemon dies first.
"""

from __future__ import annotations

from stord.server.alerts.port import Delivery, RuleState
from stord.server.backends._alert_sql import DELIVERY_COLUMNS, delivery_from_row, delivery_values
from stord.server.backends._event_sql import POSTGRES, Conditions, analytics_query, read_analytics
from stord.server.backends.postgres._pool import Pool
from stord.server.events.port import AnalyticsFigures

_CREATE_STATE = """
INSERT INTO alert_evaluations (namespace, rule_id, slot, done_slot, lease_expires_at)
VALUES (%(namespace)s, %(rule_id)s, -1, -1, 0)
ON CONFLICT DO NOTHING
"""
_CLAIM = """
UPDATE alert_evaluations SET slot = %(slot)s, lease_token = %(token)s, lease_expires_at = %(lease_until)s
WHERE namespace = %(namespace)s AND rule_id = %(rule_id)s AND done_slot < %(slot)s AND slot <= %(slot)s
  AND (slot < %(slot)s OR lease_expires_at <= %(now)s)
RETURNING alert_id, triggered_at
"""
_FINISH = """
UPDATE alert_evaluations SET done_slot = %(slot)s, lease_token = NULL, alert_id = %(alert_id)s,
    triggered_at = %(triggered_at)s
WHERE namespace = %(namespace)s AND rule_id = %(rule_id)s AND slot = %(slot)s AND lease_token = %(token)s
"""
_RESOLVE = """
UPDATE event_alert_history SET resolved_at = %s WHERE namespace = %s AND id = %s AND resolved_at IS NULL
"""
_SAVE_DELIVERY = f"""
INSERT INTO alert_deliveries (namespace, {DELIVERY_COLUMNS}) VALUES (%s{", %s" * 9})
ON CONFLICT (namespace, alert_id, kind, channel) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts, last_error = excluded.last_error,
    updated_at = excluded.updated_at, delivered_at = excluded.delivered_at
"""
_LIST_DELIVERIES = f"""
SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE namespace = %s AND alert_id = %s
ORDER BY CASE kind WHEN 'triggered' THEN 0 ELSE 1 END, channel
"""


class PostgresAlertStateStore:
    """Each primitive is one statement in its own transaction."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def rule_namespaces(self) -> list[str]:
        async with self._pool.connection() as connection:
            cursor = await connection.execute(
                "SELECT DISTINCT namespace FROM event_alert_rules ORDER BY namespace"
            )
            return [row[0] for row in await cursor.fetchall()]

    async def tagged_totals(
        self, namespace: str, *, from_time: int, to_time: int, agent_id: str | None, tags: tuple[str, ...]
    ) -> AnalyticsFigures:
        matching = Conditions(POSTGRES)
        matching.add("namespace = {}", namespace)
        matching.add("timestamp BETWEEN {} AND {}", from_time, to_time)
        if agent_id is not None:
            matching.add("agent_id = {}", agent_id)
        matching.add(
            "session_id IN (SELECT s.id FROM event_sessions AS s WHERE s.namespace = {} AND s.tags && {})",
            namespace,
            sorted(tags),
        )
        sql = analytics_query(POSTGRES, "0", matching.where())  # one bucket: only the totals are read
        async with self._pool.connection() as connection:
            rows = await (await connection.execute(sql, matching.params)).fetchall()
        return read_analytics(rows).totals

    async def claim_evaluation(
        self, namespace: str, rule_id: str, *, slot: int, token: str, now: int, lease_until: int
    ) -> RuleState | None:
        params = {"namespace": namespace, "rule_id": rule_id, "slot": slot, "token": token, "now": now,
                  "lease_until": lease_until}  # fmt: skip
        async with self._pool.connection() as connection:
            await connection.execute(_CREATE_STATE, params)
            row = await (await connection.execute(_CLAIM, params)).fetchone()
        return None if row is None else RuleState(row[0], row[1])

    async def finish_evaluation(
        self, namespace: str, rule_id: str, *, slot: int, token: str, state: RuleState
    ) -> bool:
        params = {"namespace": namespace, "rule_id": rule_id, "slot": slot, "token": token,
                  "alert_id": state.alert_id, "triggered_at": state.triggered_at}  # fmt: skip
        async with self._pool.connection() as connection:
            cursor = await connection.execute(_FINISH, params)
        return cursor.rowcount == 1

    async def resolve_alert(self, namespace: str, alert_id: str, resolved_at: int) -> None:
        async with self._pool.connection() as connection:
            await connection.execute(_RESOLVE, (resolved_at, namespace, alert_id))

    async def save_delivery(self, namespace: str, delivery: Delivery) -> None:
        async with self._pool.connection() as connection:
            await connection.execute(_SAVE_DELIVERY, (namespace, *delivery_values(delivery)))

    async def list_deliveries(self, namespace: str, alert_id: str) -> list[Delivery]:
        async with self._pool.connection() as connection:
            cursor = await connection.execute(_LIST_DELIVERIES, (namespace, alert_id))
            return [delivery_from_row(row) for row in await cursor.fetchall()]

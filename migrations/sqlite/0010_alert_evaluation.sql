-- Alert evaluation by the daemon: each rule's state and the lease of its current interval, and the delivery
-- of every alert notice to every channel. Rules and history stay in event_alert_rules / event_alert_history.

CREATE TABLE alert_evaluations (
    namespace        TEXT NOT NULL,
    rule_id          TEXT NOT NULL,
    slot             INTEGER NOT NULL,  -- the interval last claimed: floor(time / interval)
    done_slot        INTEGER NOT NULL,  -- the interval last evaluated to the end
    lease_token      TEXT,              -- the claim of `slot` while it is being evaluated
    lease_expires_at INTEGER NOT NULL,  -- milliseconds; another daemon may take `slot` over after it
    alert_id         TEXT,              -- the open alert (history entry) while the rule holds
    triggered_at     INTEGER,
    PRIMARY KEY (namespace, rule_id)
) WITHOUT ROWID;

CREATE TABLE alert_deliveries (
    namespace    TEXT NOT NULL,
    alert_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,  -- triggered, resolved
    channel      TEXT NOT NULL,
    rule_id      TEXT NOT NULL,
    status       TEXT NOT NULL,  -- pending, delivered, failed, unsupported
    attempts     INTEGER NOT NULL,
    last_error   TEXT,
    updated_at   INTEGER NOT NULL,
    delivered_at INTEGER,
    PRIMARY KEY (namespace, alert_id, kind, channel)
) WITHOUT ROWID;

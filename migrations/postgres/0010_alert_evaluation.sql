-- Alert evaluation by the daemon: each rule's state and the lease of its current interval, and the delivery
-- of every alert notice to every channel. Rules and history stay in event_alert_rules / event_alert_history.

CREATE TABLE alert_evaluations (
    namespace        text COLLATE "C" NOT NULL,
    rule_id          text COLLATE "C" NOT NULL,
    slot             bigint NOT NULL,  -- the interval last claimed: floor(time / interval)
    done_slot        bigint NOT NULL,  -- the interval last evaluated to the end
    lease_token      text,             -- the claim of `slot` while it is being evaluated
    lease_expires_at bigint NOT NULL,  -- milliseconds; another daemon may take `slot` over after it
    alert_id         text COLLATE "C", -- the open alert (history entry) while the rule holds
    triggered_at     bigint,
    PRIMARY KEY (namespace, rule_id)
);

CREATE TABLE alert_deliveries (
    namespace    text COLLATE "C" NOT NULL,
    alert_id     text COLLATE "C" NOT NULL,
    kind         text NOT NULL,  -- triggered, resolved
    channel      text COLLATE "C" NOT NULL,
    rule_id      text COLLATE "C" NOT NULL,
    status       text NOT NULL,  -- pending, delivered, failed, unsupported
    attempts     integer NOT NULL,
    last_error   text,
    updated_at   bigint NOT NULL,
    delivered_at bigint,
    PRIMARY KEY (namespace, alert_id, kind, channel)
);

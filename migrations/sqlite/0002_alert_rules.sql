-- Alert rules, their webhooks, the state of their instances and its history.
-- Times are unix milliseconds, UTC.

CREATE TABLE alert_rules (
    id           INTEGER PRIMARY KEY,
    tenant       TEXT    NOT NULL DEFAULT 'default',
    name         TEXT    NOT NULL,
    sql          TEXT    NOT NULL,
    interval_ms  INTEGER NOT NULL,
    for_ms       INTEGER NOT NULL,
    annotations  TEXT    NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    -- The scheduler's last run of the rule and, when it failed, why.
    last_evaluation  INTEGER,
    last_error       TEXT,
    UNIQUE (tenant, name)
);

CREATE TABLE alert_rule_webhooks (
    rule_id     INTEGER NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    webhook_id  INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    PRIMARY KEY (rule_id, webhook_id)
);

-- Instances the rule's SQL currently returns (pending or firing), keyed by a fingerprint
-- of their labels. A resolved instance leaves this table and is kept in alert_history.
CREATE TABLE alert_instances (
    rule_id       INTEGER NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    fingerprint   TEXT    NOT NULL,
    labels        TEXT    NOT NULL,
    annotations   TEXT    NOT NULL DEFAULT '{}',
    "values"      TEXT    NOT NULL DEFAULT '{}',
    state         TEXT    NOT NULL CHECK (state IN ('pending', 'firing')),
    active_since  INTEGER NOT NULL,
    fired_at      INTEGER,
    last_seen     INTEGER NOT NULL,
    PRIMARY KEY (rule_id, fingerprint)
);

CREATE TABLE alert_history (
    id           INTEGER PRIMARY KEY,
    rule_id      INTEGER NOT NULL,
    rule_name    TEXT    NOT NULL,
    tenant       TEXT    NOT NULL DEFAULT 'default',
    fingerprint  TEXT    NOT NULL,
    labels       TEXT    NOT NULL,
    "values"     TEXT    NOT NULL DEFAULT '{}',
    status       TEXT    NOT NULL CHECK (status IN ('firing', 'resolved')),
    starts_at    INTEGER NOT NULL,
    ends_at      INTEGER,
    at           INTEGER NOT NULL
);
CREATE INDEX alert_history_by_time ON alert_history (tenant, at);

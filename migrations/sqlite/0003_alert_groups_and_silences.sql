-- Alertmanager's semantics: notification groups with their timers, keep_firing_for,
-- resolved alerts waiting for their group's next notification, and silences.
-- Times are unix milliseconds, UTC; durations are milliseconds.

-- Rules made before this migration get Alertmanager's defaults (30s, 5m, 4h) and are
-- grouped by rule only, as Alertmanager's `group_by: [alertname]`.
ALTER TABLE alert_rules ADD COLUMN group_by TEXT NOT NULL DEFAULT '[]';
ALTER TABLE alert_rules ADD COLUMN group_wait_ms INTEGER NOT NULL DEFAULT 30000;
ALTER TABLE alert_rules ADD COLUMN group_interval_ms INTEGER NOT NULL DEFAULT 300000;
ALTER TABLE alert_rules ADD COLUMN repeat_interval_ms INTEGER NOT NULL DEFAULT 14400000;
ALTER TABLE alert_rules ADD COLUMN keep_firing_for_ms INTEGER NOT NULL DEFAULT 0;

-- Alerts that resolved since their group's last notification: the next notification
-- of the group carries them, then they are deleted. A firing alert with the same
-- fingerprint replaces its row (Alertmanager keeps one alert per fingerprint).
CREATE TABLE alert_resolved (
    rule_id      INTEGER NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    fingerprint  TEXT    NOT NULL,
    labels       TEXT    NOT NULL,
    annotations  TEXT    NOT NULL DEFAULT '{}',
    "values"     TEXT    NOT NULL DEFAULT '{}',
    starts_at    INTEGER NOT NULL,
    ends_at      INTEGER NOT NULL,
    PRIMARY KEY (rule_id, fingerprint)
);

-- One row per notification group of a rule (Alertmanager's aggregation group), keyed by
-- the values of the rule's group_by labels. `next_flush_at` is group_wait after the group
-- began, then every group_interval; `notified_*` is the notification log: what the last
-- notification said was firing and resolved, and when it went out.
CREATE TABLE alert_groups (
    rule_id            INTEGER NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    group_key          TEXT    NOT NULL,
    group_labels       TEXT    NOT NULL,
    created_at         INTEGER NOT NULL,
    next_flush_at      INTEGER NOT NULL,
    notified_at        INTEGER,
    notified_firing    TEXT    NOT NULL DEFAULT '[]',
    notified_resolved  TEXT    NOT NULL DEFAULT '[]',
    PRIMARY KEY (rule_id, group_key)
);
CREATE INDEX alert_groups_due ON alert_groups (next_flush_at);

-- Alertmanager-style silences: an alert whose labels match every matcher is not notified
-- between starts_at and ends_at. Expiring a silence sets ends_at to now.
CREATE TABLE silences (
    id          INTEGER PRIMARY KEY,
    tenant      TEXT    NOT NULL DEFAULT 'default',
    matchers    TEXT    NOT NULL,
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    created_by  TEXT    NOT NULL,
    comment     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX silences_by_tenant ON silences (tenant, ends_at);

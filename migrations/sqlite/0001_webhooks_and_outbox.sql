-- Webhooks and the durable delivery outbox. Times are unix milliseconds, UTC.
-- Every row belongs to a tenant; until authentication exists all rows are 'default'.

CREATE TABLE webhooks (
    id          INTEGER PRIMARY KEY,
    tenant      TEXT    NOT NULL DEFAULT 'default',
    name        TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    -- Standard Webhooks secret, `whsec_<base64>`; never returned by the API.
    secret      TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant, name)
);

-- One row per notification. `msg_id` is the `webhook-id` header: the same on every retry.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    tenant          TEXT    NOT NULL DEFAULT 'default',
    msg_id          TEXT    NOT NULL UNIQUE,
    webhook_id      INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    kind            TEXT    NOT NULL,
    body            BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    last_status     INTEGER,
    last_error      TEXT,
    finished_at     INTEGER
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);

CREATE TABLE delivery_attempts (
    id           INTEGER PRIMARY KEY,
    outbox_id    INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    at           INTEGER NOT NULL,
    status       INTEGER,
    error        TEXT,
    duration_ms  INTEGER NOT NULL
);
CREATE INDEX delivery_attempts_by_outbox ON delivery_attempts (outbox_id);

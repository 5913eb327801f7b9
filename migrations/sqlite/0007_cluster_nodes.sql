-- Membership: every flowscope process on this metadata database registers here at start
-- and heartbeats while it runs (GET /api/cluster). `node` is its id (DATA_DIR/node-id);
-- times are unix nanoseconds; `left_ns` is set by a clean stop.
CREATE TABLE cluster_nodes (
    node          TEXT    PRIMARY KEY,
    roles         TEXT    NOT NULL,
    otlp_grpc     TEXT,
    otlp_http     TEXT,
    api           TEXT,
    version       TEXT    NOT NULL,
    started_ns    INTEGER NOT NULL,
    heartbeat_ns  INTEGER NOT NULL,
    left_ns       INTEGER
);

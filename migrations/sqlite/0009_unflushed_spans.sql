-- What each node holds in memory and has not flushed yet (its acknowledged spans past its
-- committed WAL position), written with every heartbeat: when a node stops heartbeating,
-- this is what stays unavailable until it returns (GET /api/cluster).
ALTER TABLE cluster_nodes ADD COLUMN unflushed_spans BIGINT NOT NULL DEFAULT 0;

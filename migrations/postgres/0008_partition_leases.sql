-- The cluster's trace space: a fixed number of virtual partitions, each held by one
-- ingester under a lease (issue 24). `owner` is the node that holds or last held it (a
-- restarted node takes its own partitions back first), `until_ns` when the lease ends
-- (0: released), `epoch` grows by one each time a partition changes hands, so a receiver
-- that routed with an old map is told so by the ingester. Times are unix nanoseconds.
CREATE TABLE partition_leases (
    part      BIGINT  PRIMARY KEY,
    owner     TEXT,
    epoch     BIGINT  NOT NULL DEFAULT 0,
    until_ns  BIGINT  NOT NULL DEFAULT 0
);
INSERT INTO partition_leases (part) SELECT part FROM generate_series(0, 63) AS part;

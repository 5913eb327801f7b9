-- The cluster's trace space: a fixed number of virtual partitions, each held by one
-- ingester under a lease (issue 24). `owner` is the node that holds or last held it (a
-- restarted node takes its own partitions back first), `until_ns` when the lease ends
-- (0: released), `epoch` grows by one each time a partition changes hands, so a receiver
-- that routed with an old map is told so by the ingester. Times are unix nanoseconds.
CREATE TABLE partition_leases (
    part      INTEGER PRIMARY KEY,
    owner     TEXT,
    epoch     INTEGER NOT NULL DEFAULT 0,
    until_ns  INTEGER NOT NULL DEFAULT 0
);
WITH RECURSIVE parts(part) AS (SELECT 0 UNION ALL SELECT part + 1 FROM parts WHERE part < 63)
INSERT INTO partition_leases (part) SELECT part FROM parts;

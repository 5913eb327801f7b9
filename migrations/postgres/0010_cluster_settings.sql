-- Settings every node of a cluster shares through the metadata database. `secret`: a random
-- value the first node writes; queriers send it with every task to the other nodes' query
-- workers, which refuse tasks without it (the worker listens on the OTLP/gRPC port).
CREATE TABLE cluster_settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

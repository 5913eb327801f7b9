-- Each node (one data directory: its WAL and its files) has its own stores in the catalog, so
-- several processes may share one metadata database (PostgreSQL) without taking each
-- other's files or WAL positions. `node` is the node's id (`DATA_DIR/node-id`); rows written
-- before it existed have '' and are taken by the first node that opens them.

CREATE TABLE catalog_stores_by_node (
    node              TEXT    NOT NULL DEFAULT '',
    tenant            TEXT    NOT NULL,
    committed_wal_seq INTEGER NOT NULL,
    location          TEXT    NOT NULL,
    updated_ns        INTEGER NOT NULL,
    PRIMARY KEY (node, tenant)
);
INSERT INTO catalog_stores_by_node (node, tenant, committed_wal_seq, location, updated_ns)
    SELECT '', tenant, committed_wal_seq, location, updated_ns FROM catalog_stores;
DROP TABLE catalog_stores;
ALTER TABLE catalog_stores_by_node RENAME TO catalog_stores;

CREATE TABLE catalog_files_by_node (
    id           INTEGER PRIMARY KEY,
    node         TEXT    NOT NULL DEFAULT '',
    tenant       TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('spans', 'rollups')),
    path         TEXT    NOT NULL,
    min_start_ns INTEGER NOT NULL,
    max_start_ns INTEGER NOT NULL,
    services     TEXT,
    row_count    INTEGER NOT NULL,
    byte_count   INTEGER NOT NULL,
    wal_seq_min  INTEGER NOT NULL,
    wal_seq_max  INTEGER NOT NULL,
    created_ns   INTEGER NOT NULL,
    deleted_ns   INTEGER,
    UNIQUE (node, tenant, kind, path)
);
INSERT INTO catalog_files_by_node (id, node, tenant, kind, path, min_start_ns, max_start_ns,
        services, row_count, byte_count, wal_seq_min, wal_seq_max, created_ns, deleted_ns)
    SELECT id, '', tenant, kind, path, min_start_ns, max_start_ns, services, row_count,
        byte_count, wal_seq_min, wal_seq_max, created_ns, deleted_ns FROM catalog_files;
DROP TABLE catalog_files;
ALTER TABLE catalog_files_by_node RENAME TO catalog_files;
CREATE INDEX catalog_files_by_time ON catalog_files (node, tenant, kind, max_start_ns);

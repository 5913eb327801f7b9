-- The catalog: every committed Parquet file of every store, and each store's commit point.
-- A flush is committed by the transaction that inserts its files' rows and raises
-- `committed_wal_seq`; a file with no row here was never committed and is removed on start.
-- Times are unix nanoseconds, UTC.

CREATE TABLE catalog_stores (
    tenant            TEXT    PRIMARY KEY,
    -- The WAL sequence number of the last committed flush: replay starts past it.
    committed_wal_seq INTEGER NOT NULL,
    -- Where the files are: 'local' (the data directory) or the object store's address.
    location          TEXT    NOT NULL,
    updated_ns        INTEGER NOT NULL
);

CREATE TABLE catalog_files (
    id           INTEGER PRIMARY KEY,
    tenant       TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('spans', 'rollups')),
    -- Relative to the store's root, '/'-separated: `spans/date=…/hour=…/part-….parquet`.
    path         TEXT    NOT NULL,
    min_start_ns INTEGER NOT NULL,
    max_start_ns INTEGER NOT NULL,
    -- A JSON array of the service names in the file; NULL when there were too many to list.
    services     TEXT,
    row_count    INTEGER NOT NULL,
    byte_count   INTEGER NOT NULL,
    -- The WAL records whose spans the file holds.
    wal_seq_min  INTEGER NOT NULL,
    wal_seq_max  INTEGER NOT NULL,
    created_ns   INTEGER NOT NULL,
    -- Set when retention or compaction drops the file: queries no longer see it, and the
    -- file itself is deleted once no query that started before can still be reading it.
    deleted_ns   INTEGER,
    UNIQUE (tenant, kind, path)
);

CREATE INDEX catalog_files_by_time ON catalog_files (tenant, kind, max_start_ns);

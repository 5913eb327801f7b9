-- PostgreSQL's form of migrations/sqlite/0006_catalog_nodes.sql.
-- Each node (one data directory: its WAL and its files) has its own stores in the catalog, so
-- several processes may share one metadata database without taking each other's files or
-- WAL positions. `node` is the node's id (`DATA_DIR/node-id`); rows written before it
-- existed have '' and are taken by the first node that opens them.

ALTER TABLE catalog_stores ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE catalog_stores DROP CONSTRAINT catalog_stores_pkey;
ALTER TABLE catalog_stores ADD PRIMARY KEY (node, tenant);

ALTER TABLE catalog_files ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE catalog_files DROP CONSTRAINT catalog_files_tenant_kind_path_key;
ALTER TABLE catalog_files ADD CONSTRAINT catalog_files_node_tenant_kind_path_key
    UNIQUE (node, tenant, kind, path);
DROP INDEX catalog_files_by_time;
CREATE INDEX catalog_files_by_time ON catalog_files (node, tenant, kind, max_start_ns);

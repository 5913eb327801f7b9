//! The catalog: every committed Parquet file of every store is a row in the metadata
//! database, and a flush is committed by the one transaction that inserts its files' rows
//! and raises the store's committed WAL position. Opening a store reads its files from here
//! (no listing, no footers); retention and compaction drop rows first and delete the files
//! after a grace period; a file with no row was never committed and is removed on start.
//!
//! The store's stages run on threads of their own and call the async `sqlx` API through the
//! runtime handle the catalog holds. Called from inside a runtime (a test's async body), the
//! call runs on a scoped thread of its own instead, since a runtime cannot block in itself.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::OnceLock;

use sqlx::Row;
use tokio::runtime::{Handle, Runtime};

use crate::error::StoreError;
use crate::metadata::MetadataDb;

/// Where a store's files are, as the catalog records it: the data directory.
pub const LOCAL: &str = "local";

/// The kind of the spans' Parquet segments in `catalog_files`.
const KIND_SPANS: &str = "spans";
/// The kind of the graph's kept buckets, one object per hour (`graph/buckets-….log`).
pub const KIND_ROLLUPS: &str = "rollups";

/// One committed file, as its catalog row holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogFile {
    /// Relative to the store's root, `/`-separated (`spans/date=…/hour=…/part-….parquet`).
    pub path: String,
    pub min_start_ns: i64,
    pub max_start_ns: i64,
    /// Service names in the file; `None` when there were too many to list.
    pub services: Option<BTreeSet<String>>,
    pub rows: u64,
    pub bytes: u64,
    pub wal_seq_min: u64,
    pub wal_seq_max: u64,
}

/// A store's row in `catalog_stores`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreState {
    /// The WAL sequence number of the last committed flush.
    pub committed_wal_seq: u64,
    /// [`LOCAL`], or the object store's address (`s3://bucket/prefix`).
    pub location: String,
}

/// One store's part of the catalog: one node's (one data directory's) store of one tenant;
/// cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    db: MetadataDb,
    node: String,
    tenant: String,
    runtime: Handle,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Catalog({}/{})", self.node, self.tenant)
    }
}

/// The file in a data directory that names its node: created once, kept for its life.
pub const NODE_ID_FILE: &str = "node-id";

/// The node id of the data directory `data_dir`: read from [`NODE_ID_FILE`], or made
/// (random) and written (atomically, synced) the first time. The catalog keys a node's
/// stores by it, and alert rule leases name their holder by it; the data directory's lock
/// makes it one process's at a time.
pub fn node_id(data_dir: &Path) -> Result<String, StoreError> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error.into()),
    }
    std::fs::create_dir_all(data_dir)?;
    let id = format!("{:032x}", rand::random::<u128>());
    let temporary = data_dir.join(format!("{NODE_ID_FILE}.tmp"));
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&temporary)?;
        writeln!(file, "{id}")?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(id)
}

/// The runtime of catalogs a store opens for itself (tests, tools): one small one per
/// process, never dropped.
fn private_runtime() -> Result<&'static Runtime, StoreError> {
    // Built inside `get_or_init`, so only one is ever built: a second one dropped by a
    // losing thread inside an async test would panic.
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("flowscope-catalog")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
        .ok_or_else(|| StoreError::Internal("cannot start the catalog's runtime".into()))
}

fn catalog_error(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("the catalog (metadata database): {error}"))
}

fn now_ns() -> i64 {
    flowscope_base::clock::now_ns()
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Catalog {
    /// The store of `tenant` on `node` (a data directory's [`node_id`]) in `db` (the
    /// server's metadata database), called through `runtime`.
    pub fn new(db: MetadataDb, node: &str, tenant: &str, runtime: Handle) -> Self {
        Self {
            db,
            node: node.to_string(),
            tenant: tenant.to_string(),
            runtime,
        }
    }

    /// Opens the metadata database at `path` on a runtime of the catalog's own: for a store
    /// opened outside the server (tests, tools).
    pub fn open_private(data_dir: &Path, tenant: &str) -> Result<Self, StoreError> {
        let node = node_id(data_dir)?;
        let runtime = private_runtime()?.handle().clone();
        let path = data_dir.join("metadata.sqlite");
        let db = run_on(
            &runtime,
            async move { MetadataDb::open_sqlite(&path).await },
        )?;
        Ok(Self::new(db, &node, tenant, runtime))
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    fn run<T: Send>(
        &self,
        work: impl Future<Output = Result<T, sqlx::Error>> + Send,
    ) -> Result<T, StoreError> {
        run_on(&self.runtime, work)
    }

    /// The store's commit point and where its files are; `None` before its first start
    /// with a catalog. Rows from before stores were keyed by node (node `''`) become this
    /// node's here, once.
    pub fn state(&self) -> Result<Option<StoreState>, StoreError> {
        let (db, node, tenant) = (&self.db, &self.node, &self.tenant);
        let row = self.run(async move {
            let mut tx = db.begin_write().await?;
            let select = "SELECT committed_wal_seq, location FROM catalog_stores \
                          WHERE node = $1 AND tenant = $2";
            let mut row = sqlx::query(select)
                .bind(node)
                .bind(tenant)
                .fetch_optional(&mut *tx)
                .await?;
            if row.is_none() && !node.is_empty() {
                let adopted = sqlx::query(
                    "UPDATE catalog_stores SET node = $1 WHERE node = '' AND tenant = $2",
                )
                .bind(node)
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
                if adopted.rows_affected() > 0 {
                    sqlx::query(
                        "UPDATE catalog_files SET node = $1 WHERE node = '' AND tenant = $2",
                    )
                    .bind(node)
                    .bind(tenant)
                    .execute(&mut *tx)
                    .await?;
                    row = sqlx::query(select)
                        .bind(node)
                        .bind(tenant)
                        .fetch_optional(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(row)
        })?;
        Ok(row.map(|row| StoreState {
            committed_wal_seq: row.get::<i64, _>(0).max(0) as u64,
            location: row.get(1),
        }))
    }

    /// The store's committed spans files that no query should skip (none dropped), oldest
    /// first.
    pub fn files(&self) -> Result<Vec<CatalogFile>, StoreError> {
        self.files_of(KIND_SPANS)
    }

    /// The store's committed files of `kind` (none dropped), oldest first.
    pub fn files_of(&self, kind: &str) -> Result<Vec<CatalogFile>, StoreError> {
        let rows = self.run(
            sqlx::query(
                "SELECT path, min_start_ns, max_start_ns, services, row_count, byte_count, \
                 wal_seq_min, wal_seq_max FROM catalog_files \
                 WHERE node = $1 AND tenant = $2 AND kind = $3 AND deleted_ns IS NULL \
                 ORDER BY min_start_ns, wal_seq_max",
            )
            .bind(&self.node)
            .bind(&self.tenant)
            .bind(kind)
            .fetch_all(self.db.pool()),
        )?;
        Ok(rows
            .into_iter()
            .map(|row| catalog_file(&row, 0, row.get(0)))
            .collect())
    }

    /// Every path the catalog knows for this store, dropped ones included: what the orphan
    /// sweep must leave alone.
    pub fn known_paths(&self) -> Result<BTreeSet<String>, StoreError> {
        let rows = self.run(
            sqlx::query("SELECT path FROM catalog_files WHERE node = $1 AND tenant = $2")
                .bind(&self.node)
                .bind(&self.tenant)
                .fetch_all(self.db.pool()),
        )?;
        Ok(rows.into_iter().map(|row| row.get(0)).collect())
    }

    /// Commits a flush: `files` become visible and the committed WAL position rises to
    /// `wal_seq`, in one transaction. Repeating it (an answer lost on the way) changes
    /// nothing more.
    pub fn commit(
        &self,
        location: &str,
        files: &[CatalogFile],
        wal_seq: u64,
    ) -> Result<(), StoreError> {
        let (db, node, tenant) = (&self.db, &self.node, &self.tenant);
        self.run(async move {
            let created = now_ns();
            let mut tx = db.begin_write().await?;
            insert_spans_files(&mut tx, node, tenant, files, created).await?;
            sqlx::query(
                "INSERT INTO catalog_stores (node, tenant, committed_wal_seq, location, updated_ns) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (node, tenant) DO UPDATE SET \
                 committed_wal_seq = CASE WHEN excluded.committed_wal_seq > catalog_stores.committed_wal_seq \
                 THEN excluded.committed_wal_seq ELSE catalog_stores.committed_wal_seq END, \
                 updated_ns = excluded.updated_ns",
            )
            .bind(node)
            .bind(tenant)
            .bind(to_i64(wal_seq))
            .bind(location)
            .bind(created)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        })
    }

    /// Swaps compacted files in: `new` spans files become visible and `old` ones are
    /// dropped (deleted after the grace period), in one transaction, the WAL position
    /// untouched. Returns false, and changes nothing, when one of `old` is no longer live
    /// (retention or another compactor dropped it first).
    pub fn swap(&self, new: &[CatalogFile], old: &[String]) -> Result<bool, StoreError> {
        let (db, node, tenant) = (&self.db, &self.node, &self.tenant);
        self.run(async move {
            let now = now_ns();
            let mut tx = db.begin_write().await?;
            for path in old {
                let dropped = sqlx::query(
                    "UPDATE catalog_files SET deleted_ns = $1 \
                     WHERE node = $2 AND tenant = $3 AND kind = $4 AND path = $5 \
                     AND deleted_ns IS NULL",
                )
                .bind(now)
                .bind(node)
                .bind(tenant)
                .bind(KIND_SPANS)
                .bind(path)
                .execute(&mut *tx)
                .await?;
                if dropped.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
            }
            insert_spans_files(&mut tx, node, tenant, new, now).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Records files of `kind` that are not a flush's (the graph's kept buckets): visible at
    /// once, the WAL position untouched. A row already there for a path is updated (its
    /// object was written again, whole).
    pub fn keep(&self, kind: &str, files: &[CatalogFile]) -> Result<(), StoreError> {
        let (db, node, tenant) = (&self.db, &self.node, &self.tenant);
        self.run(async move {
            let created = now_ns();
            let mut tx = db.begin_write().await?;
            for file in files {
                sqlx::query(
                    "INSERT INTO catalog_files (node, tenant, kind, path, min_start_ns, \
                     max_start_ns, services, row_count, byte_count, wal_seq_min, wal_seq_max, \
                     created_ns) \
                     VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8, 0, 0, $9) \
                     ON CONFLICT (node, tenant, kind, path) DO UPDATE SET \
                     min_start_ns = excluded.min_start_ns, max_start_ns = excluded.max_start_ns, \
                     row_count = excluded.row_count, byte_count = excluded.byte_count, \
                     created_ns = excluded.created_ns, deleted_ns = NULL",
                )
                .bind(node)
                .bind(tenant)
                .bind(kind)
                .bind(&file.path)
                .bind(file.min_start_ns)
                .bind(file.max_start_ns)
                .bind(to_i64(file.rows))
                .bind(to_i64(file.bytes))
                .bind(created)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
    }

    /// Records that the store's files now live at `location` (after moving them there).
    pub fn set_location(&self, location: &str) -> Result<(), StoreError> {
        self.run(
            sqlx::query(
                "UPDATE catalog_stores SET location = $1, updated_ns = $2 \
                 WHERE node = $3 AND tenant = $4",
            )
            .bind(location)
            .bind(now_ns())
            .bind(&self.node)
            .bind(&self.tenant)
            .execute(self.db.pool()),
        )
        .map(drop)
    }

    /// Drops files from every query from now on; they are deleted after a grace period.
    pub fn mark_deleted(&self, paths: &[String]) -> Result<(), StoreError> {
        self.mark_deleted_of(KIND_SPANS, paths)
    }

    /// [`Catalog::mark_deleted`] for files of `kind`.
    pub fn mark_deleted_of(&self, kind: &str, paths: &[String]) -> Result<(), StoreError> {
        let (db, node, tenant) = (&self.db, &self.node, &self.tenant);
        self.run(async move {
            let now = now_ns();
            let mut tx = db.begin_write().await?;
            for path in paths {
                sqlx::query(
                    "UPDATE catalog_files SET deleted_ns = $1 \
                     WHERE node = $2 AND tenant = $3 AND kind = $4 AND path = $5 \
                     AND deleted_ns IS NULL",
                )
                .bind(now)
                .bind(node)
                .bind(tenant)
                .bind(kind)
                .bind(path)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
    }

    /// Files dropped before `before_ns`, whose deletion no query can still be reading.
    pub fn dropped_before(&self, before_ns: i64) -> Result<Vec<String>, StoreError> {
        self.dropped_before_of(KIND_SPANS, before_ns)
    }

    /// [`Catalog::dropped_before`] for files of `kind`.
    pub fn dropped_before_of(&self, kind: &str, before_ns: i64) -> Result<Vec<String>, StoreError> {
        let rows = self.run(
            sqlx::query(
                "SELECT path FROM catalog_files \
                 WHERE node = $1 AND tenant = $2 AND kind = $3 AND deleted_ns IS NOT NULL \
                 AND deleted_ns < $4",
            )
            .bind(&self.node)
            .bind(&self.tenant)
            .bind(kind)
            .bind(before_ns)
            .fetch_all(self.db.pool()),
        )?;
        Ok(rows.into_iter().map(|row| row.get(0)).collect())
    }

    /// Removes the rows of dropped files once the files are deleted.
    pub fn forget(&self, path: &str) -> Result<(), StoreError> {
        self.forget_of(KIND_SPANS, path)
    }

    /// [`Catalog::forget`] for a file of `kind`.
    pub fn forget_of(&self, kind: &str, path: &str) -> Result<(), StoreError> {
        self.run(
            sqlx::query(
                "DELETE FROM catalog_files WHERE node = $1 AND tenant = $2 AND kind = $3 \
                 AND path = $4 AND deleted_ns IS NOT NULL",
            )
            .bind(&self.node)
            .bind(&self.tenant)
            .bind(kind)
            .bind(path)
            .execute(self.db.pool()),
        )
        .map(drop)
    }
}

/// Inserts rows for spans `files` in `tx` (a row already there for a path stays as it is:
/// a commit repeated after a lost answer changes nothing).
async fn insert_spans_files(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    node: &str,
    tenant: &str,
    files: &[CatalogFile],
    created_ns: i64,
) -> Result<(), sqlx::Error> {
    for file in files {
        let services = file
            .services
            .as_ref()
            .map(|services| serde_json::to_string(services).unwrap_or_default());
        sqlx::query(
            "INSERT INTO catalog_files (node, tenant, kind, path, min_start_ns, \
             max_start_ns, services, row_count, byte_count, wal_seq_min, wal_seq_max, \
             created_ns) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (node, tenant, kind, path) DO NOTHING",
        )
        .bind(node)
        .bind(tenant)
        .bind(KIND_SPANS)
        .bind(&file.path)
        .bind(file.min_start_ns)
        .bind(file.max_start_ns)
        .bind(services)
        .bind(to_i64(file.rows))
        .bind(to_i64(file.bytes))
        .bind(to_i64(file.wal_seq_min))
        .bind(to_i64(file.wal_seq_max))
        .bind(created_ns)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Runs `work` to completion on `runtime` from synchronous code, also when called from
/// inside a runtime (where blocking on one directly would panic).
/// A file's row read from `row`, whose columns from `at` are: path, min and max start,
/// services, rows, bytes, WAL sequence min and max (`path` is the one at `at`).
fn catalog_file(row: &sqlx::any::AnyRow, at: usize, path: String) -> CatalogFile {
    CatalogFile {
        path,
        min_start_ns: row.get(at + 1),
        max_start_ns: row.get(at + 2),
        services: row
            .get::<Option<String>, _>(at + 3)
            .and_then(|text| serde_json::from_str(&text).ok()),
        rows: row.get::<i64, _>(at + 4).max(0) as u64,
        bytes: row.get::<i64, _>(at + 5).max(0) as u64,
        wal_seq_min: row.get::<i64, _>(at + 6).max(0) as u64,
        wal_seq_max: row.get::<i64, _>(at + 7).max(0) as u64,
    }
}

/// One node's committed spans files of a tenant, as a cluster's querier sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFiles {
    pub node: String,
    /// [`LOCAL`], or the object store's address of the node's files (`s3://bucket/prefix`).
    pub location: String,
    /// The node's committed WAL position: its memory holds what is past it.
    pub committed_wal_seq: u64,
    pub files: Vec<CatalogFile>,
}

/// The tenants any node has stored spans for.
pub async fn tenants(db: &MetadataDb) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT DISTINCT tenant FROM catalog_stores ORDER BY tenant")
        .fetch_all(db.pool())
        .await?;
    Ok(rows.iter().map(|row| row.get::<String, _>(0)).collect())
}

/// Every node's committed spans files of `tenant` (none dropped) with its committed WAL
/// position, read in one statement: one consistent snapshot of the whole cluster's catalog,
/// so that a file and the position it advanced are seen together or not at all.
pub async fn cluster_files(db: &MetadataDb, tenant: &str) -> Result<Vec<NodeFiles>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT s.node, s.location, s.committed_wal_seq, f.path, f.min_start_ns,          f.max_start_ns, f.services, f.row_count, f.byte_count, f.wal_seq_min, f.wal_seq_max          FROM catalog_stores s LEFT JOIN catalog_files f ON f.node = s.node          AND f.tenant = s.tenant AND f.kind = $1 AND f.deleted_ns IS NULL          WHERE s.tenant = $2 ORDER BY s.node, f.min_start_ns, f.wal_seq_max",
    )
    .bind(KIND_SPANS)
    .bind(tenant)
    .fetch_all(db.pool())
    .await?;
    let mut nodes: Vec<NodeFiles> = Vec::new();
    for row in rows {
        let node: String = row.get(0);
        if nodes.last().is_none_or(|last| last.node != node) {
            nodes.push(NodeFiles {
                node,
                location: row.get(1),
                committed_wal_seq: row.get::<i64, _>(2).max(0) as u64,
                files: Vec::new(),
            });
        }
        let Some(path) = row.get::<Option<String>, _>(3) else {
            continue;
        };
        if let Some(last) = nodes.last_mut() {
            last.files.push(catalog_file(&row, 3, path));
        }
    }
    Ok(nodes)
}

/// Runs a catalog call on `runtime` from any thread (inside a runtime, on a scoped thread).
pub(crate) fn run_on<T: Send>(
    runtime: &Handle,
    work: impl Future<Output = Result<T, sqlx::Error>> + Send,
) -> Result<T, StoreError> {
    let result = if Handle::try_current().is_ok() {
        std::thread::scope(|scope| {
            scope
                .spawn(move || runtime.block_on(work))
                .join()
                .map_err(|_| StoreError::Internal("a catalog call panicked".into()))
        })?
    } else {
        runtime.block_on(work)
    };
    result.map_err(catalog_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, start: i64, wal: u64) -> CatalogFile {
        CatalogFile {
            path: path.into(),
            min_start_ns: start,
            max_start_ns: start + 10,
            services: Some(["orders".to_string(), "payments".to_string()].into()),
            rows: 100,
            bytes: 4_096,
            wal_seq_min: wal,
            wal_seq_max: wal + 9,
        }
    }

    /// Runs against the backend `MetadataDb::open_for_tests` picks: SQLite in memory, or a
    /// new database in `FLOWSCOPE_TEST_POSTGRES` (scripts/test's PostgreSQL pass).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_is_atomic_idempotent_and_its_position_only_rises() {
        let db = MetadataDb::open_for_tests()
            .await
            .expect("metadata database");
        let catalog = Catalog::new(db.clone(), "node-a", "default", Handle::current());
        let other = Catalog::new(db.clone(), "node-a", "team-b", Handle::current());
        let other_node = Catalog::new(db.clone(), "node-b", "default", Handle::current());
        assert_eq!(catalog.state().expect("state"), None);

        let first = file("spans/a.parquet", 1_000, 1);
        catalog
            .commit(LOCAL, std::slice::from_ref(&first), 10)
            .expect("commit");
        // The answer was lost: the flusher commits the same flush again.
        catalog
            .commit(LOCAL, std::slice::from_ref(&first), 10)
            .expect("again");
        assert_eq!(catalog.files().expect("files"), vec![first.clone()]);
        let second = file("spans/b.parquet", 500, 11);
        catalog
            .commit(LOCAL, std::slice::from_ref(&second), 20)
            .expect("second");
        // A late retry of an older flush does not move the position back.
        catalog.commit(LOCAL, &[], 5).expect("stale");
        assert_eq!(
            catalog.state().expect("state"),
            Some(StoreState {
                committed_wal_seq: 20,
                location: LOCAL.into()
            })
        );
        assert_eq!(
            catalog.files().expect("files"),
            vec![second.clone(), first.clone()],
            "oldest first"
        );
        assert!(other.files().expect("other tenant").is_empty());
        assert_eq!(other.state().expect("other state"), None);
        assert!(other_node.files().expect("other node").is_empty());
        assert_eq!(other_node.state().expect("other node's state"), None);
        other_node
            .commit(LOCAL, std::slice::from_ref(&first), 3)
            .expect("the same path on another node");
        assert_eq!(
            catalog
                .state()
                .expect("state")
                .expect("row")
                .committed_wal_seq,
            20
        );

        catalog.set_location("s3://spans/x").expect("move");
        assert_eq!(
            catalog.state().expect("state").expect("row").location,
            "s3://spans/x"
        );

        catalog
            .mark_deleted(std::slice::from_ref(&first.path))
            .expect("mark deleted");
        assert_eq!(catalog.files().expect("files"), vec![second.clone()]);
        assert_eq!(
            catalog.known_paths().expect("known").len(),
            2,
            "a dropped file is still known until it is deleted"
        );
        assert!(
            catalog.dropped_before(0).expect("dropped").is_empty(),
            "within its grace period"
        );
        let due = catalog.dropped_before(i64::MAX).expect("dropped");
        assert_eq!(due, vec![first.path.clone()]);
        catalog.forget(&first.path).expect("forget");
        catalog
            .forget(&second.path)
            .expect("a live file is not forgotten");
        assert_eq!(
            catalog.known_paths().expect("known"),
            [second.path.clone()].into()
        );
    }

    /// Rows written before stores were keyed by node become the first opening node's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_catalog_from_before_nodes_is_taken_by_the_first_node_that_opens_it() {
        let db = MetadataDb::open_for_tests()
            .await
            .expect("metadata database");
        let before = Catalog::new(db.clone(), "", "default", Handle::current());
        let old = file("spans/old.parquet", 1_000, 1);
        before
            .commit(LOCAL, std::slice::from_ref(&old), 10)
            .expect("commit");
        let node = Catalog::new(db.clone(), "node-a", "default", Handle::current());
        assert_eq!(
            node.state()
                .expect("state")
                .expect("taken")
                .committed_wal_seq,
            10
        );
        assert_eq!(node.files().expect("files"), vec![old]);
        let second = Catalog::new(db, "node-b", "default", Handle::current());
        assert_eq!(second.state().expect("state"), None, "taken once");
    }
}

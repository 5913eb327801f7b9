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
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::runtime::{Handle, Runtime};

use crate::error::StoreError;

/// The metadata database's schema, embedded from `migrations/` at build time and applied in
/// order at start: the catalog's tables and the alerting tables are one set.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Where a store's files are, as the catalog records it: the data directory.
pub const LOCAL: &str = "local";

/// The kind of the spans' Parquet segments in `catalog_files`.
const KIND_SPANS: &str = "spans";

/// Opens (creating if missing) the SQLite metadata database at `path` and applies pending
/// migrations.
pub async fn open_sqlite(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // WAL with FULL sync: a committed flush, state change or outbox row survives
        // SIGKILL and power loss, and readers never wait for the writer.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// A private SQLite database in memory, migrated, for tests.
pub async fn open_sqlite_in_memory() -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
    // Every connection to ":memory:" is its own database: keep exactly one.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

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

/// One store's (one tenant's) part of the catalog; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    pool: SqlitePool,
    tenant: String,
    runtime: Handle,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Catalog({})", self.tenant)
    }
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
    /// `tenant`'s part of the catalog in `pool` (the server's metadata database), called
    /// through `runtime`.
    pub fn new(pool: SqlitePool, tenant: &str, runtime: Handle) -> Self {
        Self {
            pool,
            tenant: tenant.to_string(),
            runtime,
        }
    }

    /// Opens the metadata database at `path` on a runtime of the catalog's own: for a store
    /// opened outside the server (tests, tools).
    pub fn open_private(path: &Path, tenant: &str) -> Result<Self, StoreError> {
        let runtime = private_runtime()?.handle().clone();
        let path = path.to_path_buf();
        let pool = run_on(&runtime, async move { open_sqlite(&path).await })?;
        Ok(Self::new(pool, tenant, runtime))
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
    /// with a catalog.
    pub fn state(&self) -> Result<Option<StoreState>, StoreError> {
        let row = self.run(
            sqlx::query("SELECT committed_wal_seq, location FROM catalog_stores WHERE tenant = $1")
                .bind(&self.tenant)
                .fetch_optional(&self.pool),
        )?;
        Ok(row.map(|row| StoreState {
            committed_wal_seq: row.get::<i64, _>(0).max(0) as u64,
            location: row.get(1),
        }))
    }

    /// The store's committed spans files that no query should skip (none dropped), oldest
    /// first.
    pub fn files(&self) -> Result<Vec<CatalogFile>, StoreError> {
        let rows = self.run(
            sqlx::query(
                "SELECT path, min_start_ns, max_start_ns, services, row_count, byte_count, \
                 wal_seq_min, wal_seq_max FROM catalog_files \
                 WHERE tenant = $1 AND kind = $2 AND deleted_ns IS NULL \
                 ORDER BY min_start_ns, wal_seq_max",
            )
            .bind(&self.tenant)
            .bind(KIND_SPANS)
            .fetch_all(&self.pool),
        )?;
        Ok(rows
            .into_iter()
            .map(|row| CatalogFile {
                path: row.get(0),
                min_start_ns: row.get(1),
                max_start_ns: row.get(2),
                services: row
                    .get::<Option<String>, _>(3)
                    .and_then(|text| serde_json::from_str(&text).ok()),
                rows: row.get::<i64, _>(4).max(0) as u64,
                bytes: row.get::<i64, _>(5).max(0) as u64,
                wal_seq_min: row.get::<i64, _>(6).max(0) as u64,
                wal_seq_max: row.get::<i64, _>(7).max(0) as u64,
            })
            .collect())
    }

    /// Every path the catalog knows for this store, dropped ones included: what the orphan
    /// sweep must leave alone.
    pub fn known_paths(&self) -> Result<BTreeSet<String>, StoreError> {
        let rows = self.run(
            sqlx::query("SELECT path FROM catalog_files WHERE tenant = $1")
                .bind(&self.tenant)
                .fetch_all(&self.pool),
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
        let (pool, tenant) = (&self.pool, &self.tenant);
        self.run(async move {
            let created = now_ns();
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            for file in files {
                let services = file
                    .services
                    .as_ref()
                    .map(|services| serde_json::to_string(services).unwrap_or_default());
                sqlx::query(
                    "INSERT INTO catalog_files (tenant, kind, path, min_start_ns, max_start_ns, \
                     services, row_count, byte_count, wal_seq_min, wal_seq_max, created_ns) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (tenant, kind, path) DO NOTHING",
                )
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
                .bind(created)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO catalog_stores (tenant, committed_wal_seq, location, updated_ns) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant) DO UPDATE SET \
                 committed_wal_seq = CASE WHEN excluded.committed_wal_seq > catalog_stores.committed_wal_seq \
                 THEN excluded.committed_wal_seq ELSE catalog_stores.committed_wal_seq END, \
                 updated_ns = excluded.updated_ns",
            )
            .bind(tenant)
            .bind(to_i64(wal_seq))
            .bind(location)
            .bind(created)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        })
    }

    /// Records that the store's files now live at `location` (after moving them there).
    pub fn set_location(&self, location: &str) -> Result<(), StoreError> {
        self.run(
            sqlx::query(
                "UPDATE catalog_stores SET location = $1, updated_ns = $2 WHERE tenant = $3",
            )
            .bind(location)
            .bind(now_ns())
            .bind(&self.tenant)
            .execute(&self.pool),
        )
        .map(drop)
    }

    /// Drops files from every query from now on; they are deleted after a grace period.
    pub fn mark_deleted(&self, paths: &[String]) -> Result<(), StoreError> {
        let (pool, tenant) = (&self.pool, &self.tenant);
        self.run(async move {
            let now = now_ns();
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            for path in paths {
                sqlx::query(
                    "UPDATE catalog_files SET deleted_ns = $1 \
                     WHERE tenant = $2 AND kind = $3 AND path = $4 AND deleted_ns IS NULL",
                )
                .bind(now)
                .bind(tenant)
                .bind(KIND_SPANS)
                .bind(path)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
    }

    /// Files dropped before `before_ns`, whose deletion no query can still be reading.
    pub fn dropped_before(&self, before_ns: i64) -> Result<Vec<String>, StoreError> {
        let rows = self.run(
            sqlx::query(
                "SELECT path FROM catalog_files \
                 WHERE tenant = $1 AND kind = $2 AND deleted_ns IS NOT NULL AND deleted_ns < $3",
            )
            .bind(&self.tenant)
            .bind(KIND_SPANS)
            .bind(before_ns)
            .fetch_all(&self.pool),
        )?;
        Ok(rows.into_iter().map(|row| row.get(0)).collect())
    }

    /// Removes the rows of dropped files once the files are deleted.
    pub fn forget(&self, path: &str) -> Result<(), StoreError> {
        self.run(
            sqlx::query(
                "DELETE FROM catalog_files WHERE tenant = $1 AND kind = $2 AND path = $3 \
                 AND deleted_ns IS NOT NULL",
            )
            .bind(&self.tenant)
            .bind(KIND_SPANS)
            .bind(path)
            .execute(&self.pool),
        )
        .map(drop)
    }
}

/// Runs `work` to completion on `runtime` from synchronous code, also when called from
/// inside a runtime (where blocking on one directly would panic).
fn run_on<T: Send>(
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

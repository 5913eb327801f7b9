//! The metadata database: the catalog of committed files, alert rules, webhooks, alert
//! state and the outbox. SQLite in the data directory by default (`metadata.sqlite`), or
//! PostgreSQL when `--metadata postgres://…` names one, which several processes can share.
//!
//! Both are reached through sqlx's `Any` driver, so one set of queries serves both; they
//! are written in the SQL both accept (`$1` parameters, `ON CONFLICT`, no backend
//! functions). The schema has one set of migrations per backend (`migrations/sqlite`,
//! `migrations/postgres`): the same tables and columns in each backend's types.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Transaction};

/// SQLite's schema, applied in order at start.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");
/// PostgreSQL's schema: the same tables in its types.
pub static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// Which database holds the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the metadata database; cheap to clone.
#[derive(Clone)]
pub struct MetadataDb {
    pool: AnyPool,
    backend: Backend,
    /// Where it is, for logs (no password).
    describe: String,
}

impl std::fmt::Debug for MetadataDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetadataDb({})", self.describe)
    }
}

fn drivers() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(install_default_drivers);
}

/// `url` without its password, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(name, _)| name);
            format!("{user}@{host}")
        }
        None => authority.to_string(),
    };
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    format!("{scheme}://{authority}/{path}")
}

impl MetadataDb {
    /// Opens the database `target` names: a `postgres://` (or `postgresql://`) URL, or a
    /// SQLite file's path. Applies pending migrations.
    pub async fn open(target: &str) -> Result<Self, sqlx::Error> {
        if target.starts_with("postgres://") || target.starts_with("postgresql://") {
            Self::open_postgres(target).await
        } else {
            Self::open_sqlite(std::path::Path::new(target)).await
        }
    }

    /// Opens (creating if missing) the SQLite database at `path`.
    pub async fn open_sqlite(path: &std::path::Path) -> Result<Self, sqlx::Error> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::connect_sqlite(&url, 4, path.display().to_string()).await
    }

    /// A private SQLite database in memory, for tests.
    pub async fn open_sqlite_in_memory() -> Result<Self, sqlx::Error> {
        // Every connection to ":memory:" is its own database: keep exactly one.
        Self::connect_sqlite("sqlite::memory:", 1, ":memory:".into()).await
    }

    async fn connect_sqlite(
        url: &str,
        connections: u32,
        describe: String,
    ) -> Result<Self, sqlx::Error> {
        drivers();
        let mut options = AnyPoolOptions::new()
            .max_connections(connections)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL with FULL sync: a committed flush, state change or outbox row
                    // survives SIGKILL and power loss, and readers never wait for the
                    // writer.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                    )
                    .await?;
                    Ok(())
                })
            });
        if connections == 1 {
            options = options
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = options.connect(url).await?;
        SQLITE_MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
            describe,
        })
    }

    /// Connects to PostgreSQL at `url` and applies pending migrations.
    pub async fn open_postgres(url: &str) -> Result<Self, sqlx::Error> {
        drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        POSTGRES_MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            backend: Backend::Postgres,
            describe: redact_url(url),
        })
    }

    /// For tests: a new, empty database in the PostgreSQL server that
    /// `FLOWSCOPE_TEST_POSTGRES` names (an admin URL, as `scripts/test` exports for its
    /// PostgreSQL pass), else a private SQLite database in memory. Tests that use this run
    /// against both backends.
    pub async fn open_for_tests() -> Result<Self, sqlx::Error> {
        match std::env::var("FLOWSCOPE_TEST_POSTGRES") {
            Ok(admin) if !admin.is_empty() => {
                let url = create_test_database(&admin).await?;
                Self::open_postgres(&url).await
            }
            _ => Self::open_sqlite_in_memory().await,
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where it is, for logs (a URL without its password, or a file's path).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Begins a transaction that writes.
    ///
    /// On SQLite it holds the write lock from its first statement: a deferred transaction
    /// that reads and then writes cannot wait for another writer (SQLite answers
    /// `SQLITE_BUSY` at once instead of using the busy timeout, because the snapshot it read
    /// may be stale). On PostgreSQL rows are locked as they are written or selected
    /// `FOR UPDATE`.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        begin_write(&self.pool).await
    }
}

/// [`MetadataDb::begin_write`] for a bare pool (the alerting side holds one).
pub async fn begin_write(pool: &AnyPool) -> Result<Transaction<'static, Any>, sqlx::Error> {
    match backend_of(pool) {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => pool.begin().await,
    }
}

/// Which database `pool` reaches.
pub fn backend_of(pool: &AnyPool) -> Backend {
    if pool
        .connect_options()
        .database_url
        .scheme()
        .starts_with("postgres")
    {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// The URL of the database `name` in the server `admin` names, created if missing: for test
/// harnesses that restart a server and must find the same database again. `name` must be
/// a plain identifier (letters, digits, `_`).
pub async fn ensure_database(admin: &str, name: &str) -> Result<String, sqlx::Error> {
    drivers();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(sqlx::Error::Configuration(
            format!("{name:?} is not a plain database name").into(),
        ));
    }
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(admin)
        .await?;
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&pool)
        .await?
        .is_some();
    if !exists {
        let create = format!("CREATE DATABASE {name}");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&pool)
            .await?;
    }
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap_or((admin, ""));
    Ok(format!("{base}/{name}"))
}

/// Creates a database of its own for one test in the server `admin` names; returns its URL.
pub async fn create_test_database(admin: &str) -> Result<String, sqlx::Error> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        flowscope_base::clock::now_ns().rem_euclid(1_000_000_000)
    );
    ensure_database(admin, &name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_their_password() {
        assert_eq!(
            redact_url("postgres://flowscope:s3cret@db.internal:5432/meta?sslmode=require"),
            "postgres://flowscope@db.internal:5432/meta"
        );
        assert_eq!(
            redact_url("postgres://127.0.0.1:5432/meta"),
            "postgres://127.0.0.1:5432/meta"
        );
    }

    #[tokio::test]
    async fn migrations_apply_to_a_new_file_and_again_on_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metadata.sqlite");
        let first = MetadataDb::open_sqlite(&path).await.expect("open");
        sqlx::query("INSERT INTO webhooks (name, url, created_at, updated_at) VALUES ('a', 'https://example.com/', 0, 0)")
            .execute(first.pool())
            .await
            .expect("insert");
        first.pool().close().await;
        let again = MetadataDb::open_sqlite(&path).await.expect("reopen");
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM webhooks")
            .fetch_one(again.pool())
            .await
            .expect("count");
        assert_eq!(count, 1);
    }

    /// The migrations that change tables (0006 rebuilds the catalog's) keep the rows an
    /// earlier version wrote: the schema up to 0004 with rows in it, then the rest.
    #[tokio::test]
    async fn later_migrations_keep_the_rows_of_earlier_ones() {
        drivers();
        let (url, migrator, backend) = match std::env::var("FLOWSCOPE_TEST_POSTGRES") {
            Ok(admin) if !admin.is_empty() => (
                create_test_database(&admin).await.expect("database"),
                &POSTGRES_MIGRATOR,
                Backend::Postgres,
            ),
            _ => (
                "sqlite::memory:".to_string(),
                &SQLITE_MIGRATOR,
                Backend::Sqlite,
            ),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect(&url)
            .await
            .expect("connect");
        let apply = |range: std::ops::Range<usize>| {
            let pool = pool.clone();
            async move {
                for migration in &migrator.migrations[range] {
                    let sql = migration.sql.as_ref().to_string();
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&pool)
                        .await
                        .unwrap_or_else(|e| panic!("{}: {e}", migration.description));
                }
            }
        };
        let before = migrator
            .migrations
            .iter()
            .position(|m| m.version == 5)
            .expect("0005");
        apply(0..before).await;
        sqlx::query(
            "INSERT INTO catalog_stores (tenant, committed_wal_seq, location, updated_ns) \
             VALUES ('default', 42, 'local', 1)",
        )
        .execute(&pool)
        .await
        .expect("store row");
        sqlx::query(
            "INSERT INTO catalog_files (tenant, kind, path, min_start_ns, max_start_ns, \
             services, row_count, byte_count, wal_seq_min, wal_seq_max, created_ns) \
             VALUES ('default', 'spans', 'spans/a.parquet', 1, 2, '[\"orders\"]', 10, 100, 1, 42, 1)",
        )
        .execute(&pool)
        .await
        .expect("file row");
        sqlx::query(
            "INSERT INTO webhooks (name, url, created_at, updated_at) \
             VALUES ('ops', 'https://example.com/', 0, 0)",
        )
        .execute(&pool)
        .await
        .expect("webhook");
        apply(before..migrator.migrations.len()).await;
        let (node, seq): (String, i64) =
            sqlx::query_as("SELECT node, committed_wal_seq FROM catalog_stores")
                .fetch_one(&pool)
                .await
                .expect("store row kept");
        assert_eq!((node.as_str(), seq), ("", 42), "{backend:?}");
        let (node, path, rows): (String, String, i64) =
            sqlx::query_as("SELECT node, path, row_count FROM catalog_files")
                .fetch_one(&pool)
                .await
                .expect("file row kept");
        assert_eq!(
            (node.as_str(), path.as_str(), rows),
            ("", "spans/a.parquet", 10)
        );
        let (claimed,): (i64,) = sqlx::query_as("SELECT count(*) FROM webhooks")
            .fetch_one(&pool)
            .await
            .expect("webhooks kept");
        assert_eq!(claimed, 1);
        // The new key: the same path on two nodes.
        sqlx::query(
            "INSERT INTO catalog_files (node, tenant, kind, path, min_start_ns, max_start_ns, \
             row_count, byte_count, wal_seq_min, wal_seq_max, created_ns) \
             VALUES ('b', 'default', 'spans', 'spans/a.parquet', 1, 2, 10, 100, 1, 42, 1)",
        )
        .execute(&pool)
        .await
        .expect("another node's file of the same path");
    }
}

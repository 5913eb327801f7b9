//! The metadata database: a SQLite file in the data directory, migrated at start.

use std::path::Path;

use flowscope_query::store::catalog;
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::AlertError;
use crate::deliver::DeliveryWaker;

/// The schema (the catalog's tables and the alerting tables), applied in order at start.
pub use flowscope_query::store::catalog::MIGRATOR;

/// A handle on the metadata database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metadata {
    pool: SqlitePool,
    /// Whoever commits an outbox row wakes the delivery worker through this.
    waker: DeliveryWaker,
}

impl Metadata {
    /// Opens (creating if missing) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, AlertError> {
        Ok(Self::with_pool(catalog::open_sqlite(path).await?))
    }

    /// A private database in memory, for tests.
    pub async fn open_in_memory() -> Result<Self, AlertError> {
        Ok(Self::with_pool(catalog::open_sqlite_in_memory().await?))
    }

    fn with_pool(pool: SqlitePool) -> Self {
        Self {
            pool,
            waker: DeliveryWaker::default(),
        }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Wakes the delivery worker; call it after committing a transaction that enqueued
    /// notifications so they go out now rather than at the worker's next poll.
    pub fn delivery_waker(&self) -> DeliveryWaker {
        self.waker.clone()
    }
}

/// Begins a transaction that holds SQLite's write lock from its first statement.
///
/// A deferred transaction that reads and then writes cannot wait for another writer: SQLite
/// answers `SQLITE_BUSY` at once instead of using the busy timeout, because the snapshot it
/// read may be stale. Every transaction here that writes starts with this instead.
pub async fn begin_write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, AlertError> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrations_apply_to_a_new_file_and_again_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.sqlite");
        let first = Metadata::open(&path).await.unwrap();
        sqlx::query("INSERT INTO webhooks (name, url, created_at, updated_at) VALUES ('a', 'https://example.com/', 0, 0)")
            .execute(first.pool())
            .await
            .unwrap();
        first.pool().close().await;
        let again = Metadata::open(&path).await.unwrap();
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM webhooks")
            .fetch_one(again.pool())
            .await
            .unwrap();
        assert_eq!(count, 1);
    }
}

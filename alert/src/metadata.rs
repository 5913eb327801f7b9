//! The metadata database (SQLite in the data directory, or PostgreSQL with `--metadata`),
//! opened and migrated by `flowscope_query::metadata`, with the alerting side's handle on it.

use std::path::Path;

use flowscope_query::metadata::MetadataDb;
use sqlx::{Any, AnyPool, Transaction};

use crate::AlertError;
use crate::deliver::DeliveryWaker;

/// A handle on the metadata database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metadata {
    db: MetadataDb,
    /// Whoever commits an outbox row wakes the delivery worker through this.
    waker: DeliveryWaker,
}

impl Metadata {
    /// Opens (creating if missing) the SQLite database at `path` and applies pending
    /// migrations.
    pub async fn open(path: &Path) -> Result<Self, AlertError> {
        Ok(Self::new(MetadataDb::open_sqlite(path).await?))
    }

    /// A private database for tests: in memory, or a new one in the PostgreSQL server
    /// `FLOWSCOPE_TEST_POSTGRES` names (`scripts/test`'s PostgreSQL pass).
    pub async fn open_in_memory() -> Result<Self, AlertError> {
        Ok(Self::new(MetadataDb::open_for_tests().await?))
    }

    pub fn new(db: MetadataDb) -> Self {
        Self {
            db,
            waker: DeliveryWaker::default(),
        }
    }

    pub fn pool(&self) -> &AnyPool {
        self.db.pool()
    }

    pub fn db(&self) -> &MetadataDb {
        &self.db
    }

    /// Wakes the delivery worker; call it after committing a transaction that enqueued
    /// notifications so they go out now rather than at the worker's next poll.
    pub fn delivery_waker(&self) -> DeliveryWaker {
        self.waker.clone()
    }
}

/// Begins a transaction that writes (on SQLite, one that holds the write lock from its
/// first statement: see [`MetadataDb::begin_write`]).
pub async fn begin_write(pool: &AnyPool) -> Result<Transaction<'static, Any>, AlertError> {
    Ok(flowscope_query::metadata::begin_write(pool).await?)
}

pub use flowscope_query::metadata::backend_of;

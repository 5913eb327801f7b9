//! The span store and the SQL engine.
//!
//! ```text
//!  span batch ──> WAL (group commit, fsync) ──> memtable ──> Parquet segments (hourly, zstd)
//!                                                  │               │
//!                         SQL ──> SqlEngine ──> SpansTable (memory + Parquet, pruned) ──> rows
//! ```
//!
//! **Invariant:** a span is acknowledged only after its WAL record is written (and fsynced
//! under the default policy); the WAL is truncated only after the Parquet flush holding
//! its spans is committed.

pub mod anomaly;
pub mod bounded_functions;
pub mod error;
/// The fuzz targets' checks (`fuzz/`), shared with `tests/fuzz_corpus.rs`.
#[doc(hidden)]
pub mod fuzzing;
pub mod graph_tables;
pub mod health;
pub mod hex_id;
pub mod history;
pub mod incidents;
pub mod rollups;
pub mod segment;
pub mod sql;
pub mod store;
pub mod table;
pub mod wal;

pub use error::{QueryError, StoreError};
pub use sql::{QueryOutput, QueryStream, SqlConfig, SqlEngine, SqlResources};
pub use store::{RequestDecoder, SpanStore, StoreConfig, StoreStats};
pub use wal::WalSync;

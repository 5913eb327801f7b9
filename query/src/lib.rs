//! The span store, the SQL engine, and the graph's persistence and read path.
//!
//! ```text
//!  store/  span batch ──> WAL (group commit, fsync) ──> memtable ──> Parquet segments (hourly)
//!                                                          │               │
//!  sql/    SQL ──> SqlEngine ──> SpansTable (memory + Parquet, pruned) ──> rows
//!  graph/  GraphView ──> live graph, kept buckets, or a rebuild from the store's spans
//!          ──> nodes, edges, loops, health, incidents, anomaly functions (tables of sql/)
//! ```
//!
//! **Invariant:** a span is acknowledged only after its WAL record is written (and fsynced
//! under the default policy); the WAL is truncated only after the Parquet flush holding
//! its spans is committed.

pub mod error;
/// The fuzz targets' checks (`fuzz/`), shared with `tests/fuzz_corpus.rs`.
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
pub mod membership;
pub mod metadata;
pub mod partitions;
pub mod sql;
pub mod store;

pub use error::{QueryError, StoreError};
pub use graph::GraphView;
pub use sql::{QueryOutput, QueryStream, SqlConfig, SqlEngine, SqlResources};
pub use store::wal::WalSync;
pub use store::{RequestDecoder, SpanStore, StoreConfig, StoreStats};

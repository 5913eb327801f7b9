//! The span schema every flowscope crate shares: Arrow fields, id encoding, the batch
//! builder and the retention rule over a batch.
//!
//! ```text
//!  collector ──(SpanBatch: Arrow RecordBatch in SPAN_SCHEMA)──> query (WAL, memtable, Parquet, SQL)
//!                                                         └──> graph
//! ```
//!
//! The storage schema keeps ids compact (`FixedSizeBinary`); the SQL schema shows them as
//! lowercase hex strings. Both are defined here so that no other crate invents its own.
//! Durations, sizes, the memory budget and the clock are in `flowscope-base`, which needs
//! no Arrow.

pub mod ids;
pub mod retention;
pub mod schema;

pub use schema::{SpanBatchBuilder, SpanRecord, columns, sql_schema, storage_schema};

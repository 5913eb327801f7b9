//! The span schema every flowscope crate shares: Arrow fields, id encoding and time helpers.
//!
//! ```text
//!  collector ──(SpanBatch: Arrow RecordBatch in SPAN_SCHEMA)──> query (WAL, memtable, Parquet, SQL)
//!                                                         └──> graph (later)
//! ```
//!
//! The storage schema keeps ids compact (`FixedSizeBinary`); the SQL schema shows them as
//! lowercase hex strings. Both are defined here so that no other crate invents its own.

pub mod duration;
pub mod ids;
pub mod liveness;
pub mod memory;
pub mod retention;
pub mod schema;
pub mod size;
pub mod telemetry;

pub use duration::{format_duration, parse_duration};
pub use schema::{SpanBatchBuilder, SpanRecord, columns, sql_schema, storage_schema};
pub use size::parse_size;

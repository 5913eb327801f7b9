//! SQL across a flowscope cluster (issue 24): a querier's `spans` table reads every node's
//! files and every live ingester's memory, and the plan runs on the nodes'
//! datafusion-distributed workers. `sql.rs` is the only module that names that crate.

pub mod graph;
pub mod memtable;
pub mod sql;

pub use graph::{GraphServer, PeerClient};
pub use memtable::LocalStores;
pub use sql::{Directory, Snapshot, engine, worker};

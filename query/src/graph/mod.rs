//! The graph past inference, write path and read path in one place: the graph stage that
//! feeds the live graph from the store's commits, the buckets kept past its horizon, windows
//! rebuilt from the stored spans, health, incidents, and the graph in SQL.
//!
//! ```text
//!  store commits ──> stage: LiveGraph ──trimmed buckets──> rollups (hourly files)
//!  GraphView::snapshot(window) ──> live buckets ─┬─> merge, names, loops ──> health
//!                                  rollups ──────┤
//!                                  history ──────┘ (rebuilt from store::read_range)
//!  SQL: nodes, edges, feedback_loops, *_between, anomaly functions, incidents,
//!       blast_radius, dependencies, paths ──> GraphView
//! ```
//!
//! The store knows nothing of this module, which reads the store only through `SpanStore`,
//! `View`, `Recovered` and `store::read`.

pub mod anomaly;
pub mod health;
pub mod history;
pub mod incidents;
pub mod questions;
pub mod rollups;
pub mod stage;
pub mod tables;
pub mod view;

pub use view::{GraphView, LIVE_WINDOW};

use crate::error::QueryError;
use crate::sql::SqlEngine;

/// Registers every table and table function of the graph: the one list of them.
pub fn register(engine: &SqlEngine, graph: &GraphView) -> Result<(), QueryError> {
    tables::register(engine, graph)?;
    anomaly::register(engine, graph);
    incidents::register(engine, graph);
    questions::register(engine, graph);
    Ok(())
}

//! The graph's persistence and read path: the buckets kept past the live graph's horizon,
//! windows rebuilt from the stored spans, health, incidents, and the graph in SQL.
//!
//! ```text
//!  LiveGraph (graph stage) ──trimmed buckets──> rollups (hourly files)
//!  GraphView::snapshot(window) ──> live buckets ─┬─> merge, names, loops ──> health
//!                                  rollups ──────┤
//!                                  history ──────┘ (rebuilt from store::read_range)
//!  SQL: nodes, edges, feedback_loops, *_between, anomaly functions, incidents ──> GraphView
//! ```

pub mod anomaly;
pub mod health;
pub mod history;
pub mod incidents;
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
    Ok(())
}

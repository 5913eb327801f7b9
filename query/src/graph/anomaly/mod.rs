//! Anomaly SQL: the graph cut into time series per edge and per node, statistical process
//! control over them, a seasonal z-score against the same hour of earlier days, and
//! topology events between consecutive steps. Each is a table function:
//!
//! ```text
//!  edge_series / node_series (bucket, from, to)      one row per bucket and edge (node)
//!  edge_control / node_control (bucket, baseline, k)  every point with limits, EWMA, CUSUM
//!  edge_anomalies / node_anomalies (same arguments)   one row per rule a point fails
//!  edge_seasonal / node_seasonal (window, days, at)   now against the same hour of earlier days
//!  topology_events (from, to, step)                   appeared, vanished, loops, amplification
//!
//!  GraphView::snapshot per bucket ──> series.rs ──> spc.rs (pure maths) ──> Arrow batch
//! ```
//!
//! Every function reads the graph through [`GraphView::snapshot`], the same windows as
//! `edges_between`, so a series bucket's numbers are exactly that bucket's `edges_between` row.

mod anomalies;
mod args;
mod control;
mod seasonal;
mod series;
pub mod spc;
mod topology_events;

use std::sync::Arc;

use datafusion::catalog::TableFunctionImpl;

use crate::graph::GraphView;
use crate::sql::SqlEngine;
use series::Subjects;

pub use args::whole_buckets;

/// Registers every anomaly table function: the one list of them.
pub fn register(engine: &SqlEngine, graph: &GraphView) {
    let functions: Vec<(&str, Arc<dyn TableFunctionImpl>)> = vec![
        ("edge_series", series::function(graph, Subjects::Edges)),
        ("node_series", series::function(graph, Subjects::Nodes)),
        ("edge_control", control::function(graph, Subjects::Edges)),
        ("node_control", control::function(graph, Subjects::Nodes)),
        (
            "edge_anomalies",
            anomalies::function(graph, Subjects::Edges),
        ),
        (
            "node_anomalies",
            anomalies::function(graph, Subjects::Nodes),
        ),
        ("edge_seasonal", seasonal::function(graph, Subjects::Edges)),
        ("node_seasonal", seasonal::function(graph, Subjects::Nodes)),
        ("topology_events", topology_events::function(graph)),
    ];
    for (name, function) in functions {
        engine.register_table_function(name, function);
    }
}

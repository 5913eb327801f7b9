//! Starts the graph stage (`flowscope_query::graph::stage`, the loop that owns the writes to
//! the live graph) on a thread of its own.

use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use flowscope_base::liveness::{Liveness, Stage};
use flowscope_graph::{GraphConfig, LiveGraph};
use flowscope_query::graph::stage;

pub use stage::{GraphInput, Keeper};

/// The running stage: the shared graph, the input that opens the store feeding it, and the thread
/// (which ends when every sender is gone).
pub struct GraphStage {
    pub graph: Arc<RwLock<LiveGraph>>,
    pub input: GraphInput,
    pub thread: JoinHandle<()>,
}

/// Starts the stage, registered in `liveness`: it is marked stopped if its thread ends (or
/// panics) before shutdown.
pub fn start(
    config: GraphConfig,
    keeper: Option<Keeper>,
    liveness: &Arc<Liveness>,
) -> std::io::Result<GraphStage> {
    let stage::GraphStage {
        graph,
        input,
        runner,
    } = stage::GraphStage::new(config, keeper);
    let alive = liveness.start(Stage::Graph);
    let thread = std::thread::Builder::new()
        .name("flowscope-graph".into())
        .spawn(move || runner.run(&alive))?;
    Ok(GraphStage {
        graph,
        input,
        thread,
    })
}

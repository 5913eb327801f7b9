//! The graph stage: one thread that owns the writes to the live graph. It takes every batch
//! the store makes durable, in commit order, and advances the graph's clock once a second
//! (pairing expiry, trace finalization, horizon trimming).

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::record_batch::RecordBatch;
use flowscope_graph::{GraphConfig, LiveGraph};

/// Batches waiting for the graph; when full, the store's writer waits (no span is skipped).
const QUEUE: usize = 256;
const TICK: Duration = Duration::from_secs(1);

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The running stage: the shared graph, the sender the store commits to, and the thread
/// (which ends when every sender is gone).
pub struct GraphStage {
    pub graph: Arc<RwLock<LiveGraph>>,
    pub input: SyncSender<RecordBatch>,
    pub thread: JoinHandle<()>,
}

pub fn start(config: GraphConfig) -> std::io::Result<GraphStage> {
    let graph = Arc::new(RwLock::new(LiveGraph::new(config)));
    let (input, receiver) = std::sync::mpsc::sync_channel(QUEUE);
    let owned = graph.clone();
    let thread = std::thread::Builder::new()
        .name("flowscope-graph".into())
        .spawn(move || run(&owned, &receiver))?;
    Ok(GraphStage {
        graph,
        input,
        thread,
    })
}

fn run(graph: &RwLock<LiveGraph>, batches: &Receiver<RecordBatch>) {
    let mut last_tick = Instant::now();
    loop {
        match batches.recv_timeout(TICK) {
            Ok(batch) => {
                // Take whatever else is waiting under the same lock: fewer lock round trips.
                let mut graph = match graph.write() {
                    Ok(graph) => graph,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let now = now_ns();
                graph.ingest(&batch, now);
                while let Ok(more) = batches.try_recv() {
                    graph.ingest(&more, now);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            let mut graph = match graph.write() {
                Ok(graph) => graph,
                Err(poisoned) => poisoned.into_inner(),
            };
            graph.advance(now_ns());
        }
    }
}

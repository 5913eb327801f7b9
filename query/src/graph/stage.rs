//! The graph stage: the loop that owns the writes to the live graph. It takes every batch
//! the store makes durable, in commit order, and advances the graph's clock once a second
//! (pairing expiry, trace finalization, horizon trimming); its [`Keeper`] writes the buckets
//! the horizon trims to [`Rollups`]. The loop runs on its caller's thread: the binary's
//! pipeline starts it. [`GraphInput::open_store`] opens the store that feeds it, first with
//! the stored spans of the graph's horizon, so a restart rebuilds the live graph.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use flowscope_base::clock::now_ns;
use flowscope_base::liveness::{Liveness, Stage, StageGuard};
use flowscope_graph::{GraphConfig, LiveGraph, StoredBucket};
use flowscope_model::storage_schema;

use crate::error::StoreError;
use crate::graph::rollups::Rollups;
use crate::store::{Recovered, SpanStore, StoreConfig, StoreStages};

/// Batches waiting for the graph; when full, the store's writer waits (no span is skipped).
const QUEUE: usize = 256;
const TICK: Duration = Duration::from_secs(1);

/// The stage before it runs: the graph readers share, the sender the store commits to, and
/// the loop, which ends when every sender is gone.
pub struct GraphStage {
    pub graph: Arc<RwLock<LiveGraph>>,
    pub input: GraphInput,
    pub runner: GraphRunner,
}

impl GraphStage {
    pub fn new(config: GraphConfig, keeper: Option<Keeper>) -> Self {
        // After a restart the live graph is rebuilt from the spans of its horizon.
        let backfill = config.horizon;
        let graph = Arc::new(RwLock::new(LiveGraph::new(config)));
        let (sender, batches) = std::sync::mpsc::sync_channel(QUEUE);
        let input = GraphInput { sender, backfill };
        let runner = GraphRunner {
            graph: graph.clone(),
            batches,
            keeper,
        };
        Self {
            graph,
            input,
            runner,
        }
    }
}

/// The stage's input: the batches the store commits, after the stored spans of the graph's
/// horizon.
pub struct GraphInput {
    sender: SyncSender<RecordBatch>,
    backfill: Duration,
}

impl GraphInput {
    /// Opens the store that feeds the graph, which sees exactly the durable spans, in this
    /// order: the stored spans that started within its horizon (oldest segment first), the
    /// batches replayed from the WAL, then every batch the store commits. Each send blocks
    /// while the stage's queue is full, so a slow graph slows ingest instead of losing spans.
    /// The store's stages are returned for the caller to run (`Recovered::stages`).
    pub fn open_store(
        self,
        config: StoreConfig,
    ) -> Result<(Arc<SpanStore>, StoreStages), StoreError> {
        let recovered = SpanStore::recover(config)?;
        let since = now_ns().saturating_sub(self.backfill.as_nanos().min(i64::MAX as u128) as i64);
        let sent = backfill(&recovered, since, &self.sender)?;
        if sent > 0 {
            tracing::info!(
                spans = sent,
                "sent stored spans of the recent past to the graph"
            );
        }
        for batch in recovered.replayed() {
            let _ = self.sender.send(batch.clone());
        }
        recovered.stages(Some(self.sender))
    }
}

/// Sends the rows of the stored segments that started at or after `since_ns` to `graph`.
fn backfill(
    recovered: &Recovered,
    since_ns: i64,
    graph: &SyncSender<RecordBatch>,
) -> Result<usize, StoreError> {
    let mut sent = 0;
    recovered.read_stored_since(since_ns, &mut |batch| {
        // Parquet gives back the schema it stored; the graph expects the storage schema.
        let batch = RecordBatch::try_new(storage_schema(), batch.columns().to_vec())?;
        sent += batch.num_rows();
        Ok(graph.send(batch).is_ok())
    })?;
    Ok(sent)
}

/// The stage's loop and what it owns: the receiving end of its input and the keeper.
pub struct GraphRunner {
    graph: Arc<RwLock<LiveGraph>>,
    batches: Receiver<RecordBatch>,
    keeper: Option<Keeper>,
}

/// Keeps the buckets the horizon trims, so old windows need no rebuild from spans.
pub struct Keeper {
    pub rollups: Arc<Rollups>,
    /// The live graph holds whole buckets from here (the backfill's start, rounded up to a
    /// bucket); trimmed buckets before it are partial and not kept.
    next_from_ns: i64,
    retention: Duration,
    last_retention: Option<Instant>,
}

impl Keeper {
    pub fn new(
        rollups: Arc<Rollups>,
        covered_from_ns: i64,
        graph: &GraphConfig,
        retention: Duration,
    ) -> Self {
        let next_from_ns = graph.bucket_start_at_or_after(covered_from_ns);
        Self {
            rollups,
            next_from_ns,
            retention,
            last_retention: None,
        }
    }

    /// Writes the trimmed buckets and claims the range up to `trimmed_before_ns`. A failed
    /// write claims nothing: that range is rebuilt from spans when asked for.
    fn keep(
        &mut self,
        trimmed: &[StoredBucket],
        trimmed_before_ns: Option<i64>,
        liveness: &Liveness,
    ) {
        let Some(to) = trimmed_before_ns.filter(|to| *to > self.next_from_ns) else {
            return;
        };
        if let Err(error) = self.rollups.append(trimmed, self.next_from_ns, to) {
            liveness.error(Stage::GraphKeeper);
            tracing::warn!(%error, "cannot keep graph buckets past the horizon; old windows there will be rebuilt from spans");
        }
        self.next_from_ns = to;
        if self
            .last_retention
            .is_none_or(|at| at.elapsed() >= RETENTION_EVERY)
        {
            self.last_retention = Some(Instant::now());
            let cutoff =
                now_ns().saturating_sub(self.retention.as_nanos().min(i64::MAX as u128) as i64);
            if let Err(error) = self.rollups.remove_older_than(cutoff) {
                liveness.error(Stage::GraphKeeper);
                tracing::warn!(%error, "cannot apply retention to kept graph buckets");
            }
        }
    }
}

const RETENTION_EVERY: Duration = Duration::from_secs(3600);

impl GraphRunner {
    /// Runs until the store's writer, the only sender, is gone; `alive` is the stage's
    /// registration, which counts the errors it survives.
    pub fn run(self, alive: &StageGuard) {
        run(&self.graph, &self.batches, self.keeper, alive);
    }
}

fn run(
    graph: &RwLock<LiveGraph>,
    batches: &Receiver<RecordBatch>,
    mut keeper: Option<Keeper>,
    alive: &StageGuard,
) {
    let mut last_tick = Instant::now();
    loop {
        match batches.recv_timeout(TICK) {
            Ok(batch) => {
                // Take whatever else is waiting under the same lock: fewer lock round trips.
                let mut graph = match graph.write() {
                    Ok(graph) => graph,
                    Err(poisoned) => {
                        // A reader panicked holding the lock; the graph itself is whole.
                        alive.error();
                        poisoned.into_inner()
                    }
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
            let (trimmed, trimmed_before) = {
                let mut graph = match graph.write() {
                    Ok(graph) => graph,
                    Err(poisoned) => {
                        // A reader panicked holding the lock; the graph itself is whole.
                        alive.error();
                        poisoned.into_inner()
                    }
                };
                graph.advance(now_ns());
                (graph.take_trimmed(), graph.trimmed_before_ns())
            };
            // Written after letting go of the lock: readers never wait for the disk.
            if let Some(keeper) = keeper.as_mut() {
                keeper.keep(&trimmed, trimmed_before, alive.liveness());
            }
        }
    }
}

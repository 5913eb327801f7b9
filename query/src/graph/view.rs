//! The graph in SQL: tables `nodes`, `edges`, `feedback_loops` over the live window (the last
//! 15 minutes) and table functions `nodes_between(from, to)`, `edges_between(from, to)`,
//! `feedback_loops_between(from, to)` over any window: the live graph answers windows in its
//! horizon (one hour by default), older ones are rebuilt from the stored spans (`history.rs`)
//! with the same code, so both give the same answer.
//!
//! ```text
//!  SELECT ... FROM edges ──> GraphTable::scan ──> GraphView::snapshot(window)
//!                                 ├─ in the horizon: LiveGraph::window (shares the buckets
//!                                 │    under the read lock), then merge, names, loops
//!                                 └─ older: history::rebuild from Parquet + memtable,
//!                                    joined at a bucket edge with the live part
//!                            ──> Arrow batch
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;
use flowscope_base::clock::now_ns;
use flowscope_graph::{
    Element, Figures, GraphConfig, GraphCounters, LiveGraph, Snapshot, Window, element_series,
};

use crate::error::QueryError;
use crate::graph::health::{self, BaselineFigures, Objective, Objectives};
use crate::graph::history;
use crate::graph::rollups::Rollups;
use crate::sql::SqlEngine;
use crate::store::SpanStore;

/// The live window the plain graph tables show.
pub const LIVE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// How long a computed live window is shared by polling readers (event streams).
const LIVE_REUSE: Duration = Duration::from_millis(500);
/// Rebuilt windows kept, most recent use first.
const REBUILT_KEPT: usize = 16;
/// Health's baseline: the sub-windows of this width (aligned to multiples of it) in the hour
/// before a window, as far as the live graph holds them. Their figures are computed once and
/// kept, so a reader pays for one new sub-window every five minutes, not for an hour of
/// buckets on every read.
pub(crate) const BASELINE_STEP: Duration = Duration::from_secs(5 * 60);
const BASELINE_STEPS: i64 = 12;
/// Baseline sub-windows kept, the newest: an hour's, plus a few for windows further back.
const BASELINE_KEPT: usize = 16;

/// The live graph, shared by the graph stage (which writes it) and readers, plus what it
/// takes to rebuild windows older than its horizon from the stored spans.
#[derive(Debug, Clone)]
pub struct GraphView {
    live: Arc<RwLock<LiveGraph>>,
    history: Arc<History>,
    last_live: Arc<Mutex<Option<Computed>>>,
    objectives: Arc<Objectives>,
    /// Health's baseline sub-windows by start, once they have settled: the buckets they were
    /// computed from (to tell whether they changed since) and their figures.
    baseline: Arc<Mutex<BTreeMap<i64, KeptBaseline>>>,
    /// The last incidents of the live window, shared by readers for a few seconds.
    pub(crate) live_incidents: Arc<Mutex<Option<crate::graph::incidents::LiveIncidents>>>,
}

/// A judged window with the nodes' own verdicts and the baseline it was judged against.
#[derive(Debug)]
pub(crate) struct Judged {
    pub snapshot: Snapshot,
    pub own: health::OwnHealth,
    pub baseline: Vec<Arc<BaselineFigures>>,
}

/// A snapshot and when it was computed.
type Computed = (Instant, Arc<Snapshot>);
/// A baseline sub-window's buckets and the figures computed from them.
type KeptBaseline = (Window, Arc<BaselineFigures>);
/// A rebuilt window by its `(from_ns, to_ns)`.
type Rebuilt = ((i64, i64), Window);

#[derive(Debug)]
struct History {
    store: Arc<SpanStore>,
    config: GraphConfig,
    /// The live graph holds every window starting at or after this (and after its trim).
    covered_from_ns: i64,
    time_limit: Duration,
    /// Rebuilt windows that had ended (plus the pairing TTL) when they were rebuilt.
    rebuilt: Mutex<Vec<Rebuilt>>,
    /// Buckets the live graph kept past its horizon, when the binary keeps them.
    rollups: Option<Arc<Rollups>>,
    /// Old windows answered from kept buckets, and rebuilt from spans.
    from_rollups: AtomicU64,
    from_spans: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl GraphView {
    /// The live graph, plus what answers windows starting before `covered_from_ns` (or
    /// before what the live graph has trimmed): kept buckets when `rollups` cover them, else
    /// a rebuild from `store` within `time_limit`.
    pub fn with_history(
        graph: Arc<RwLock<LiveGraph>>,
        store: Arc<SpanStore>,
        rollups: Option<Arc<Rollups>>,
        covered_from_ns: i64,
        time_limit: Duration,
    ) -> Self {
        let config = match graph.read() {
            Ok(g) => g.config().clone(),
            Err(poisoned) => poisoned.into_inner().config().clone(),
        };
        Self {
            live: graph,
            history: Arc::new(History {
                store,
                config,
                covered_from_ns,
                time_limit,
                rebuilt: Mutex::new(Vec::new()),
                rollups,
                from_rollups: AtomicU64::new(0),
                from_spans: AtomicU64::new(0),
            }),
            last_live: Arc::default(),
            objectives: Arc::default(),
            baseline: Arc::default(),
            live_incidents: Arc::default(),
        }
    }

    /// Health also judges every element against these objectives.
    pub fn with_objectives(mut self, objectives: Vec<Objective>) -> Self {
        self.objectives = Arc::new(Objectives::new(objectives));
        self
    }

    /// Old windows answered from kept buckets and rebuilt from spans, so far.
    pub fn history_counters(&self) -> (u64, u64) {
        (
            self.history.from_rollups.load(Ordering::Relaxed),
            self.history.from_spans.load(Ordering::Relaxed),
        )
    }

    /// The width of the graph's statistics buckets: the finest step a series can take.
    pub fn bucket(&self) -> Duration {
        self.history.config.bucket
    }

    /// The live graph's counters and its approximate heap size in bytes.
    pub fn counters(&self) -> (GraphCounters, usize) {
        let read = |graph: &LiveGraph| (graph.counters(), graph.approximate_memory_bytes());
        match self.live.read() {
            Ok(graph) => read(&graph),
            Err(poisoned) => read(&poisoned.into_inner()),
        }
    }

    /// The graph of `[from_ns, to_ns)`: from the live graph for the part it holds, rebuilt
    /// from the stored spans for any part before that (which may take seconds; call it off
    /// the async runtime). A window across the boundary joins the two at a bucket edge, so
    /// every call is counted once and by the same bucket rule as a live window.
    pub fn snapshot(&self, from_ns: i64, to_ns: i64) -> Result<Arc<Snapshot>, QueryError> {
        Ok(Arc::new(self.window(from_ns, to_ns)?.into_snapshot()))
    }

    /// The buckets of `[from_ns, to_ns)`, as [`GraphView::snapshot`] merges them.
    fn window(&self, from_ns: i64, to_ns: i64) -> Result<Window, QueryError> {
        let history = &self.history;
        let covered = self.live_covers_from(history);
        if from_ns >= covered {
            return Ok(self.live_window(from_ns, to_ns));
        }
        // The first whole bucket the live graph holds.
        let boundary = history.config.bucket_start_at_or_after(covered);
        if to_ns <= boundary {
            return history.old_window(from_ns, to_ns);
        }
        let old = history.old_window(from_ns, boundary)?;
        let recent = self.live_window(boundary, to_ns);
        Ok(old.join(recent))
    }

    /// One node's or edge's figures in each window `[start, start + width)`, named as the
    /// graph of all of them names its nodes (`None` where that window's graph is empty): the
    /// figures `edge_series` and `node_series` give, without building the whole graph of
    /// every step. Steps the live graph holds are taken under one read lock; older ones
    /// are read like any old window (kept buckets, or rebuilt: call it off the runtime).
    pub fn element_series(
        &self,
        element: &Element,
        starts: &[i64],
        width: i64,
    ) -> Result<Vec<Option<Figures>>, QueryError> {
        let in_memory = |graph: &LiveGraph| {
            let covered = covered_from(&self.history, graph);
            starts
                .first()
                .is_some_and(|&first| first >= covered)
                .then(|| {
                    starts
                        .iter()
                        .map(|&start| graph.window(start, start.saturating_add(width)))
                        .collect::<Vec<_>>()
                })
        };
        let live = match self.live.read() {
            Ok(graph) => in_memory(&graph),
            Err(poisoned) => in_memory(&poisoned.into_inner()),
        };
        let windows = match live {
            Some(windows) => windows,
            None => starts
                .iter()
                .map(|&start| self.window(start, start.saturating_add(width)))
                .collect::<Result<_, _>>()?,
        };
        Ok(element_series(&windows, element))
    }

    /// [`GraphView::snapshot`] with every node and edge judged (`health.rs`) against its
    /// baseline in the hour before `from_ns` (what the live graph holds of it) and the
    /// objectives.
    pub fn judged(&self, from_ns: i64, to_ns: i64) -> Result<Arc<Snapshot>, QueryError> {
        let snapshot = Arc::unwrap_or_clone(self.snapshot(from_ns, to_ns)?);
        Ok(Arc::new(self.judge(snapshot)))
    }

    fn judge(&self, mut snapshot: Snapshot) -> Snapshot {
        let baseline = self.baseline_before(snapshot.from_ns);
        health::judge_snapshot(&mut snapshot, &baseline, &self.objectives);
        snapshot
    }

    /// [`GraphView::judged`], plus what incidents need beside it: the nodes' own verdicts
    /// and the baseline sub-windows the window was judged against.
    pub(crate) fn judged_in_detail(&self, from_ns: i64, to_ns: i64) -> Result<Judged, QueryError> {
        // Figures only: incidents need no loops, and finding them is the costly part.
        let mut snapshot = self.window(from_ns, to_ns)?.figures();
        let baseline = self.baseline_before(snapshot.from_ns);
        let own = health::judge_snapshot(&mut snapshot, &baseline, &self.objectives);
        Ok(Judged {
            snapshot,
            own,
            baseline,
        })
    }

    /// The operator's objectives, as health applies them.
    pub(crate) fn objectives(&self) -> &Objectives {
        &self.objectives
    }

    /// The figures of the baseline sub-windows before `from_ns` that the live graph holds
    /// whole. Older ones are not rebuilt from spans: that could take seconds on every read.
    fn baseline_before(&self, from_ns: i64) -> Vec<Arc<BaselineFigures>> {
        let step = BASELINE_STEP.as_nanos() as i64;
        let end = from_ns.div_euclid(step) * step;
        let covered = self.live_covers_from(&self.history);
        let ttl_ns = i64::try_from(self.history.config.pairing_ttl.as_nanos()).unwrap_or(i64::MAX);
        let settled_before = now_ns().saturating_sub(ttl_ns.saturating_mul(2));
        let mut found = Vec::new();
        for back in (1..=BASELINE_STEPS).rev() {
            let start = end - back * step;
            if start < covered {
                continue;
            }
            let window = self.live_window(start, start + step);
            if let Some((buckets, figures)) = lock(&self.baseline).get(&start)
                && buckets.same_buckets(&window)
            {
                found.push(figures.clone());
                continue;
            }
            let figures = Arc::new(BaselineFigures::of(&window.figures()));
            // Keeping a sub-window holds its buckets, and the graph stage copies a held bucket
            // before it changes it: only sub-windows that no longer take new spans (but for
            // late or backfilled ones, which the bucket check above then sees) are kept.
            if start + step < settled_before {
                let mut kept = lock(&self.baseline);
                kept.insert(start, (window, figures.clone()));
                while kept.len() > BASELINE_KEPT {
                    kept.pop_first();
                }
            }
            found.push(figures);
        }
        found
    }

    /// The live graph holds every window starting at or after this.
    pub(crate) fn live_from_ns(&self) -> i64 {
        self.live_covers_from(&self.history)
    }

    fn live_covers_from(&self, history: &History) -> i64 {
        match self.live.read() {
            Ok(graph) => covered_from(history, &graph),
            Err(poisoned) => covered_from(history, &poisoned.into_inner()),
        }
    }

    /// Takes the window's buckets under the read lock (shared, not copied); merging them,
    /// naming nodes and finding loops happen after letting it go, so a big graph never holds
    /// up the graph stage.
    fn live_window(&self, from_ns: i64, to_ns: i64) -> Window {
        match self.live.read() {
            Ok(graph) => graph.window(from_ns, to_ns),
            Err(poisoned) => poisoned.into_inner().window(from_ns, to_ns),
        }
    }

    /// The graph of the last `LIVE_WINDOW`, as of now, judged.
    pub fn live(&self) -> Arc<Snapshot> {
        let now = now_ns();
        let snapshot = self
            .live_window(now - LIVE_WINDOW.as_nanos() as i64, now + 1)
            .into_snapshot();
        Arc::new(self.judge(snapshot))
    }

    /// Like [`GraphView::live`], but a result computed less than `LIVE_REUSE` ago is shared:
    /// for readers that poll (every event stream asks once a second), so a hundred open
    /// dashboards cost one computation, not a hundred.
    pub fn live_shared(&self) -> Arc<Snapshot> {
        let mut last = lock(&self.last_live);
        if let Some((at, snapshot)) = last.as_ref()
            && at.elapsed() < LIVE_REUSE
        {
            return snapshot.clone();
        }
        let snapshot = self.live();
        *last = Some((Instant::now(), snapshot.clone()));
        snapshot
    }
}

/// The live graph holds every window starting at or after this.
fn covered_from(history: &History, graph: &LiveGraph) -> i64 {
    history
        .covered_from_ns
        .max(graph.trimmed_before_ns().unwrap_or(i64::MIN))
}

impl History {
    /// The buckets of an old window: kept ones when they cover it all, else rebuilt.
    fn old_window(&self, from_ns: i64, to_ns: i64) -> Result<Window, QueryError> {
        if let Some(rollups) = &self.rollups {
            // Bucket starts at or after `from` count, by the live graph's rule.
            let first = self.config.bucket_start_at_or_after(from_ns);
            match rollups.load(first, to_ns) {
                Ok(Some(kept)) => {
                    self.from_rollups.fetch_add(1, Ordering::Relaxed);
                    return Ok(Window::from_stored(from_ns, to_ns, &kept));
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot read kept graph buckets; rebuilding from spans")
                }
            }
        }
        self.from_spans.fetch_add(1, Ordering::Relaxed);
        self.window(from_ns, to_ns)
    }

    /// The buckets of `[from_ns, to_ns)` rebuilt from the stored spans, or kept from an
    /// earlier rebuild of the same window.
    fn window(&self, from_ns: i64, to_ns: i64) -> Result<Window, QueryError> {
        if let Some(found) = self.cached(from_ns, to_ns) {
            return Ok(found);
        }
        let started = Instant::now();
        let view = self.store.view();
        let (window, stats) =
            history::rebuild(&view, &self.config, from_ns, to_ns, self.time_limit)?;
        tracing::debug!(
            spans = stats.spans_read,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rebuilt a graph window from stored spans"
        );
        // A window is final once its spans can no longer arrive; only then is it kept.
        let ttl_ns = i64::try_from(self.config.pairing_ttl.as_nanos()).unwrap_or(i64::MAX);
        if to_ns.saturating_add(ttl_ns.saturating_mul(2)) < now_ns() {
            let mut rebuilt = lock(&self.rebuilt);
            rebuilt.insert(0, ((from_ns, to_ns), window.clone()));
            rebuilt.truncate(REBUILT_KEPT);
        }
        Ok(window)
    }

    fn cached(&self, from_ns: i64, to_ns: i64) -> Option<Window> {
        let mut rebuilt = lock(&self.rebuilt);
        let position = rebuilt.iter().position(|(w, _)| *w == (from_ns, to_ns))?;
        let entry = rebuilt.remove(position);
        let window = entry.1.clone();
        rebuilt.insert(0, entry);
        Some(window)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Which {
    Nodes,
    Edges,
    Loops,
}

pub(crate) fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn schema_of(which: Which) -> SchemaRef {
    let window = [
        Field::new("window_start", timestamp(), false),
        Field::new("window_end", timestamp(), false),
    ];
    let mut fields = match which {
        Which::Nodes => vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("calls", DataType::Int64, false),
            Field::new("errors", DataType::Int64, false),
            Field::new("error_rate", DataType::Float64, false),
            Field::new("p50_ms", DataType::Float64, false),
            Field::new("p95_ms", DataType::Float64, false),
            Field::new("p99_ms", DataType::Float64, false),
            Field::new("health", DataType::Utf8, false),
            Field::new("health_reason", DataType::Utf8, false),
        ],
        Which::Edges => vec![
            Field::new("source", DataType::Utf8, false),
            Field::new("target", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("calls", DataType::Int64, false),
            Field::new("errors", DataType::Int64, false),
            Field::new("error_rate", DataType::Float64, false),
            Field::new("p50_ms", DataType::Float64, false),
            Field::new("p95_ms", DataType::Float64, false),
            Field::new("p99_ms", DataType::Float64, false),
            Field::new("bytes", DataType::Int64, false),
            Field::new("amplification", DataType::Float64, false),
            Field::new("trace_loops", DataType::Int64, false),
            Field::new("health", DataType::Utf8, false),
            Field::new("health_reason", DataType::Utf8, false),
            Field::new("amplified", DataType::Boolean, false),
        ],
        Which::Loops => vec![
            Field::new("id", DataType::Utf8, false),
            Field::new(
                "nodes",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
            ),
            Field::new("length", DataType::Int64, false),
            Field::new("calls", DataType::Int64, false),
            Field::new("trace_loops", DataType::Int64, false),
        ],
    };
    fields.extend(window);
    Arc::new(Schema::new(fields))
}

fn rate(errors: u64, calls: u64) -> f64 {
    if calls == 0 {
        0.0
    } else {
        errors as f64 / calls as f64
    }
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn texts(values: impl Iterator<Item = String>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn ints(values: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(
        values.map(|v| v.min(i64::MAX as u64) as i64),
    ))
}

fn floats(values: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(values))
}

fn batch_of(which: Which, snapshot: &Snapshot) -> Result<RecordBatch> {
    let schema = schema_of(which);
    let mut columns: Vec<ArrayRef> = match which {
        Which::Nodes => {
            let n = &snapshot.nodes;
            vec![
                strings(n.iter().map(|x| x.id.as_str())),
                strings(n.iter().map(|x| x.kind.as_str())),
                ints(n.iter().map(|x| x.calls_in)),
                ints(n.iter().map(|x| x.errors_in)),
                floats(n.iter().map(|x| rate(x.errors_in, x.calls_in))),
                floats(n.iter().map(|x| x.p50_ms)),
                floats(n.iter().map(|x| x.p95_ms)),
                floats(n.iter().map(|x| x.p99_ms)),
                strings(n.iter().map(|x| x.health.level.as_str())),
                texts(n.iter().map(|x| x.health.reasons.join("; "))),
            ]
        }
        Which::Edges => {
            let e = &snapshot.edges;
            vec![
                strings(e.iter().map(|x| x.source.as_str())),
                strings(e.iter().map(|x| x.target.as_str())),
                strings(e.iter().map(|x| x.kind.as_str())),
                ints(e.iter().map(|x| x.calls)),
                ints(e.iter().map(|x| x.errors)),
                floats(e.iter().map(|x| rate(x.errors, x.calls))),
                floats(e.iter().map(|x| x.p50_ms)),
                floats(e.iter().map(|x| x.p95_ms)),
                floats(e.iter().map(|x| x.p99_ms)),
                ints(e.iter().map(|x| x.bytes)),
                floats(e.iter().map(|x| x.amplification)),
                ints(e.iter().map(|x| x.trace_loops)),
                strings(e.iter().map(|x| x.health.level.as_str())),
                texts(e.iter().map(|x| x.health.reasons.join("; "))),
                Arc::new(BooleanArray::from_iter(e.iter().map(|x| Some(x.amplified)))),
            ]
        }
        Which::Loops => {
            let l = &snapshot.loops;
            let mut nodes = ListBuilder::new(StringBuilder::new());
            for lp in l {
                for node in &lp.nodes {
                    nodes.values().append_value(node);
                }
                nodes.append(true);
            }
            vec![
                strings(l.iter().map(|x| x.id.as_str())),
                Arc::new(nodes.finish()),
                ints(l.iter().map(|x| x.nodes.len() as u64)),
                ints(l.iter().map(|x| x.calls)),
                ints(l.iter().map(|x| x.trace_loops)),
            ]
        }
    };
    let rows = columns.first().map_or(0, |c| c.len());
    let window = |ns: i64| -> ArrayRef {
        Arc::new(TimestampNanosecondArray::from(vec![ns; rows]).with_timezone("UTC"))
    };
    columns.push(window(snapshot.from_ns));
    columns.push(window(snapshot.to_ns));
    // The list column's item field must match the schema exactly.
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[derive(Debug, Clone, Copy)]
enum TableWindow {
    Live,
    Fixed(i64, i64),
}

/// One graph table, over the live window or a fixed one.
#[derive(Debug)]
pub struct GraphTable {
    which: Which,
    graph: GraphView,
    window: TableWindow,
}

#[async_trait]
impl TableProvider for GraphTable {
    fn schema(&self) -> SchemaRef {
        schema_of(self.which)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = match self.window {
            TableWindow::Live => self.graph.live(),
            TableWindow::Fixed(from, to) => {
                // A window older than the horizon is rebuilt from Parquet: off the runtime.
                let graph = self.graph.clone();
                tokio::task::spawn_blocking(move || graph.judged(from, to))
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
            }
        };
        let batch = batch_of(self.which, &snapshot)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// `edges_between(from, to)` and its siblings: the graph of a fixed window.
#[derive(Debug)]
pub struct GraphTableFunction {
    which: Which,
    graph: GraphView,
}

pub(crate) fn timestamp_argument(expr: &Expr, name: &str) -> Result<i64> {
    let simplifier = ExprSimplifier::new(SimplifyContext::builder().with_current_time().build());
    let value = match simplifier.simplify(expr.clone())? {
        Expr::Literal(value, _) => value,
        other => {
            return plan_err!(
                "{name} must be a constant timestamp such as now() - INTERVAL '1 hour', not {other}"
            );
        }
    };
    match value.cast_to(&timestamp())? {
        ScalarValue::TimestampNanosecond(Some(ns), _) => Ok(ns),
        _ => plan_err!("{name} must be a timestamp, e.g. TIMESTAMP '2026-11-29T06:00:00Z'"),
    }
}

/// A table function's `(from, to)` window in unix ns: two constant timestamps, `to` later.
/// `usage` is what the error says the function takes, e.g. "incidents takes two timestamps".
pub(crate) fn window_arguments(args: &TableFunctionArgs, usage: &str) -> Result<(i64, i64)> {
    let [from, to] = args.exprs() else {
        return plan_err!("{usage}: (from, to), e.g. (now() - INTERVAL '1 hour', now())");
    };
    let (from, to) = (
        timestamp_argument(from, "from")?,
        timestamp_argument(to, "to")?,
    );
    if to <= from {
        return plan_err!("the window is empty: `to` must be later than `from`");
    }
    Ok((from, to))
}

impl TableFunctionImpl for GraphTableFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (from, to) = window_arguments(&args, "this function takes two timestamps")?;
        Ok(Arc::new(GraphTable {
            which: self.which,
            graph: self.graph.clone(),
            window: TableWindow::Fixed(from, to),
        }))
    }
}

/// Registers `nodes`, `edges`, `feedback_loops`, their `*_between` table functions, and the
/// anomaly functions built on them (`anomaly/`).
pub fn register(engine: &SqlEngine, graph: &GraphView) -> Result<(), QueryError> {
    for (name, which) in [
        ("nodes", Which::Nodes),
        ("edges", Which::Edges),
        ("feedback_loops", Which::Loops),
    ] {
        let table = GraphTable {
            which,
            graph: graph.clone(),
            window: TableWindow::Live,
        };
        engine.register_table(name, Arc::new(table))?;
        let function = GraphTableFunction {
            which,
            graph: graph.clone(),
        };
        engine.register_table_function(&format!("{name}_between"), Arc::new(function));
    }
    crate::graph::anomaly::register(engine, graph);
    crate::graph::incidents::register(engine, graph);
    Ok(())
}

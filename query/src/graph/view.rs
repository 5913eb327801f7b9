//! [`GraphView`]: the one way to read the graph. A window inside the live graph's horizon
//! is merged from its buckets (shared under the read lock), an older one from the buckets
//! kept past the horizon (`rollups.rs`), else rebuilt from the stored spans (`history.rs`);
//! windows are judged by `health.rs`.
//!
//! ```text
//!  GraphView::snapshot(window)
//!      ├─ in the horizon: LiveGraph::window (shares the buckets under the read lock),
//!      │    then merge, names, loops
//!      └─ older: rollups, else history::rebuild from Parquet + memtable,
//!         joined at a bucket edge with the live part
//! ```
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use flowscope_base::clock::now_ns;
use flowscope_graph::{
    Around, Element, Figures, Focus, GraphConfig, GraphCounters, LiveGraph, MergedWindow, Snapshot,
    StoredBucket, Window, element_series,
};

use crate::error::QueryError;
use crate::graph::health::{self, BaselineFigures, Objective, Objectives};
use crate::graph::history;
use crate::graph::rollups::Rollups;
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
/// Merged windows kept to be brought up to date by the next read (`MergedWindow`): the
/// dashboard's 15 minutes, a shorter window polled beside it, the incidents' window. Each
/// holds its merged figures (about what one bucket of every edge costs) and its buckets.
const MERGED_KEPT: usize = 3;
/// A window of fewer buckets than this is merged afresh and not kept: that costs little,
/// and keeping it would push out (and free, on the reader's time) a big window's merge.
const MERGED_MIN_BUCKETS: usize = 6;

/// The other ingesters of a cluster, as one tenant's graph sees them: each holds the graph of
/// the traces routed to it, and a querier merges their buckets of a window with its own
/// (counters add, latency sketches merge), so loops, health and incidents are found on the
/// graph of the whole system. Blocking: graph reads run off the async runtime.
pub trait GraphPeers: Send + Sync + std::fmt::Debug {
    /// The buckets every other live ingester holds for `[from_ns, to_ns)` (live, kept or
    /// rebuilt on that node), or why one of them could not answer.
    fn buckets(&self, from_ns: i64, to_ns: i64) -> Result<Vec<StoredBucket>, QueryError>;
}

/// The live graph, shared by the graph stage (which writes it) and readers, plus what it
/// takes to rebuild windows older than its horizon from the stored spans.
#[derive(Debug, Clone)]
pub struct GraphView {
    live: Arc<RwLock<LiveGraph>>,
    history: Arc<History>,
    last_live: Arc<Mutex<Option<Computed>>>,
    /// The last judged window `GET /api/graph` asked for, by its bounds.
    last_judged: Arc<Mutex<Option<JudgedAt>>>,
    objectives: Arc<Objectives>,
    /// Health's baseline sub-windows by start, once they have settled: the buckets they were
    /// computed from (to tell whether they changed since) and their figures.
    baseline: Arc<Mutex<BTreeMap<i64, KeptBaseline>>>,
    /// Recent windows' merges, least recently used first: a read takes the one closest to
    /// its window, brings it up to date at the cost of the buckets that changed, and puts it
    /// back.
    merged: Arc<Mutex<Vec<MergedWindow>>>,
    /// The last incidents of the live window, shared by readers for a few seconds.
    pub(crate) live_incidents: Arc<Mutex<Option<crate::graph::incidents::LiveIncidents>>>,
    /// A cluster querier's other ingesters, whose windows merge into every read.
    peers: Option<Arc<dyn GraphPeers>>,
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
/// A judged snapshot, when it was computed and its window's bounds.
type JudgedAt = (Instant, (i64, i64), Arc<Snapshot>);
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
            last_judged: Arc::default(),
            objectives: Arc::default(),
            baseline: Arc::default(),
            merged: Arc::default(),
            live_incidents: Arc::default(),
            peers: None,
        }
    }

    /// Every window read also merges the buckets of `peers` (a cluster's querier).
    pub fn with_peers(mut self, peers: Arc<dyn GraphPeers>) -> Self {
        self.peers = Some(peers);
        self
    }

    /// This node's own buckets of `[from_ns, to_ns)`, never its peers': what an ingester
    /// answers a querier.
    pub fn own_buckets(&self, from_ns: i64, to_ns: i64) -> Result<Vec<StoredBucket>, QueryError> {
        Ok(self.own_window(from_ns, to_ns)?.stored())
    }

    /// The peers' buckets of `[from_ns, to_ns)` as a window (empty without peers).
    fn peer_window(&self, from_ns: i64, to_ns: i64) -> Result<Window, QueryError> {
        let stored = match &self.peers {
            Some(peers) => peers.buckets(from_ns, to_ns)?,
            None => Vec::new(),
        };
        Ok(Window::from_stored(from_ns, to_ns, &stored))
    }

    /// [`GraphView::peer_window`] for readers that cannot fail (the live window, baselines):
    /// a peer that cannot answer is left out, and said in the log.
    fn peer_window_or_none(&self, from_ns: i64, to_ns: i64) -> Window {
        self.peer_window(from_ns, to_ns).unwrap_or_else(|error| {
            tracing::warn!(%error, "the graph leaves out the ingesters that did not answer");
            Window::from_stored(from_ns, to_ns, &[])
        })
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
        Ok(Arc::new(self.merged(&self.window(from_ns, to_ns)?, true)))
    }

    /// The window's snapshot (with its loops when `loops`, else its figures only), merged
    /// from the kept merge closest to it: a window that slid by a bucket or whose newest
    /// buckets took spans costs what changed, not a merge of all its buckets.
    fn merged(&self, window: &Window, loops: bool) -> Snapshot {
        self.merged_with(window, |merged, window| {
            if loops {
                merged.snapshot(window)
            } else {
                merged.figures(window)
            }
        })
    }

    /// What `read` takes from the window's merge, brought up to date from the kept merge
    /// closest to it (see [`GraphView::merged`]).
    fn merged_with<T>(&self, window: &Window, read: impl FnOnce(&MergedWindow, &Window) -> T) -> T {
        // A cluster querier's windows hold its peers' buckets, decoded afresh on every read:
        // their merges could never be brought up to date, so they are not kept (keeping one
        // would only push out another, and make the reader pay for freeing it).
        if window.bucket_count() < MERGED_MIN_BUCKETS || self.peers.is_some() {
            return read(&MergedWindow::new(window), window);
        }
        let closest = {
            let mut kept = lock(&self.merged);
            kept.iter()
                .enumerate()
                .filter_map(|(at, merged)| Some((merged.distance(window)?, at)))
                .min()
                .map(|(_, at)| kept.remove(at))
        };
        let merged = match closest {
            Some(mut merged) => {
                merged.update(window);
                merged
            }
            None => MergedWindow::new(window),
        };
        let answer = read(&merged, window);
        let evicted = {
            let mut kept = lock(&self.merged);
            kept.push(merged);
            let excess = kept.len().saturating_sub(MERGED_KEPT);
            kept.drain(..excess).collect::<Vec<_>>()
        };
        // Freed after the lock is let go: a 100,000-edge merge takes milliseconds to free.
        drop(evicted);
        answer
    }

    /// The buckets of `[from_ns, to_ns)`, as [`GraphView::snapshot`] merges them: this
    /// node's and its peers'.
    fn window(&self, from_ns: i64, to_ns: i64) -> Result<Window, QueryError> {
        let own = self.own_window(from_ns, to_ns)?;
        if self.peers.is_none() {
            return Ok(own);
        }
        Ok(own.merge(self.peer_window(from_ns, to_ns)?))
    }

    /// This node's buckets of `[from_ns, to_ns)`: live, kept, or rebuilt from its spans.
    fn own_window(&self, from_ns: i64, to_ns: i64) -> Result<Window, QueryError> {
        let history = &self.history;
        let covered = self.live_covers_from(history);
        if from_ns >= covered {
            return Ok(self.own_live_window(from_ns, to_ns));
        }
        // The first whole bucket the live graph holds.
        let boundary = history.config.bucket_start_at_or_after(covered);
        if to_ns <= boundary {
            return history.old_window(from_ns, to_ns);
        }
        let old = history.old_window(from_ns, boundary)?;
        let recent = self.own_live_window(boundary, to_ns);
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
        let mut windows: Vec<Window> = match live {
            Some(windows) => windows,
            None => starts
                .iter()
                .map(|&start| self.own_window(start, start.saturating_add(width)))
                .collect::<Result<_, _>>()?,
        };
        // A cluster's peers are asked once for the whole span of the steps.
        if let (Some(&first), Some(&last)) = (starts.iter().min(), starts.iter().max())
            && self.peers.is_some()
        {
            let peers = self
                .peer_window(first, last.saturating_add(width))?
                .stored();
            windows = windows
                .into_iter()
                .zip(starts)
                .map(|(own, &start)| {
                    own.merge(Window::from_stored(
                        start,
                        start.saturating_add(width),
                        &peers,
                    ))
                })
                .collect();
        }
        Ok(element_series(&windows, element))
    }

    /// [`GraphView::snapshot`] with every node and edge judged (`health.rs`) against its
    /// baseline in the hour before `from_ns` (what the live graph holds of it) and the
    /// objectives.
    pub fn judged(&self, from_ns: i64, to_ns: i64) -> Result<Arc<Snapshot>, QueryError> {
        let snapshot = Arc::unwrap_or_clone(self.snapshot(from_ns, to_ns)?);
        Ok(Arc::new(self.judge(snapshot)))
    }

    /// The part of the window's snapshot that a neighbourhood of `focus` needs
    /// ([`MergedWindow::around`]), judged as [`GraphView::judged`] judges the whole:
    /// filtering it with that focus answers what filtering the judged snapshot answers, at
    /// the cost of the neighbourhood. `None` when the window has no node of that id.
    pub fn judged_around(
        &self,
        from_ns: i64,
        to_ns: i64,
        focus: &Focus,
    ) -> Result<Option<Around>, QueryError> {
        let window = self.window(from_ns, to_ns)?;
        let Some(mut around) =
            self.merged_with(&window, |merged, window| merged.around(window, focus))
        else {
            return Ok(None);
        };
        around.snapshot = self.judge(around.snapshot);
        Ok(Some(around))
    }

    /// The live window's judged snapshot if one for these bounds was computed less than
    /// `LIVE_REUSE` ago ([`GraphView::judged_shared`]), without computing one.
    pub fn judged_shared_if_fresh(&self, from_ns: i64, to_ns: i64) -> Option<Arc<Snapshot>> {
        let last = lock(&self.last_judged);
        last.as_ref()
            .filter(|(at, bounds, _)| *bounds == (from_ns, to_ns) && at.elapsed() < LIVE_REUSE)
            .map(|(_, _, snapshot)| snapshot.clone())
    }

    /// [`GraphView::judged`], with a result for the same bounds computed less than
    /// `LIVE_REUSE` ago shared: for the live window as `GET /api/graph` asks for it (ending at
    /// the next bucket boundary, so its bounds stay the same within a bucket), where a
    /// dashboard's questions come together (the whole graph, a neighbourhood, a group, the
    /// busiest edges) and each should cost a filter, not a judged snapshot. Readers that
    /// arrive while it is computed wait for it rather than compute it again.
    pub fn judged_shared(&self, from_ns: i64, to_ns: i64) -> Result<Arc<Snapshot>, QueryError> {
        let mut last = lock(&self.last_judged);
        if let Some((at, bounds, snapshot)) = last.as_ref()
            && *bounds == (from_ns, to_ns)
            && at.elapsed() < LIVE_REUSE
        {
            return Ok(snapshot.clone());
        }
        let snapshot = self.judged(from_ns, to_ns)?;
        *last = Some((Instant::now(), (from_ns, to_ns), snapshot.clone()));
        Ok(snapshot)
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
        let mut snapshot = self.merged(&self.window(from_ns, to_ns)?, false);
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
        // A cluster's peers are asked once for the whole hour.
        let peers = match &self.peers {
            Some(_) => self
                .peer_window_or_none(covered.max(end - BASELINE_STEPS * step), end)
                .stored(),
            None => Vec::new(),
        };
        for back in (1..=BASELINE_STEPS).rev() {
            let start = end - back * step;
            if start < covered {
                continue;
            }
            let window = self
                .own_live_window(start, start + step)
                .merge(Window::from_stored(start, start + step, &peers));
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
    fn own_live_window(&self, from_ns: i64, to_ns: i64) -> Window {
        match self.live.read() {
            Ok(graph) => graph.window(from_ns, to_ns),
            Err(poisoned) => poisoned.into_inner().window(from_ns, to_ns),
        }
    }

    /// [`GraphView::own_live_window`] merged with the peers' buckets of the window.
    fn live_window(&self, from_ns: i64, to_ns: i64) -> Window {
        let own = self.own_live_window(from_ns, to_ns);
        if self.peers.is_none() {
            return own;
        }
        own.merge(self.peer_window_or_none(from_ns, to_ns))
    }

    /// The graph of the last `LIVE_WINDOW`, as of now, judged.
    pub fn live(&self) -> Arc<Snapshot> {
        let now = now_ns();
        let snapshot = self.merged(
            &self.live_window(now - LIVE_WINDOW.as_nanos() as i64, now + 1),
            true,
        );
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

//! The live graph: spans go into a pairing store, a call is inferred as soon as both of its
//! halves are there (whatever their arrival order), its statistics go to the bucket of its
//! event time, and a trace idle for the pairing TTL is finalized (unpaired spans, per-trace
//! loops, amplification) and leaves the store.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use crate::attributes::{AttributeTable, NodeAttributes};
use crate::filter::Focus;
use crate::persist::StoredBucket;
use crate::spans::{GraphAttributes, SpanColumns, SpanId, SpanKey, SpanKind, SpanRow, TraceId};
use crate::trace_paths::{
    CallRecord, Entered, Path, Seed, TraceSpan, caller_groups, keep_distinct, walk_trace,
};
use crate::types::{EdgeKind, GraphConfig, GraphCounters, NodeKind, Snapshot};
use crate::window::{Around, Bucket, EdgeKey, NodeKey, WindowStats};
use crate::{FastMap, FastSet};

/// The live dependency graph. One instance sees every span of a trace (route by trace id
/// when there are several); it is not thread-safe by itself: the owner serializes calls.
pub struct LiveGraph {
    config: GraphConfig,
    bucket_ns: i64,
    ttl_ns: i64,
    horizon_ns: i64,
    /// The pairing store: every trace not yet finalized, each holding its own spans, so a
    /// span's parent and children are found next to it (one hash lookup per trace, not one
    /// per span into a table of every pending span).
    traces: FastMap<TraceId, TraceState>,
    /// Spans in `traces`, for the bound on the pairing store.
    pending_spans: usize,
    /// Traces by last activity: the order of expiry and of eviction.
    idle_order: BTreeSet<(i64, TraceId)>,
    /// Spans not yet seen that others wait for (a SERVER's parent, a CONSUMER's producers).
    waiting: FastMap<SpanKey, Vec<SpanKey>>,
    /// Shared with readers' windows: a bucket written while a reader holds it is copied.
    buckets: BTreeMap<i64, Arc<Bucket>>,
    /// Buckets starting before this were trimmed; statistics for them are dropped.
    trimmed_before_ns: Option<i64>,
    /// Service, queue and peer names, shared by spans and buckets.
    names: FastSet<Arc<str>>,
    /// The names interned last, checked before `names`: a batch usually comes from one
    /// service and calls the same few peers, and comparing a short string costs less than
    /// hashing it. Cleared at every `advance`, so unused names can still be dropped.
    recent_names: [Option<Arc<str>>; RECENT_NAMES],
    next_recent: usize,
    counters: GraphCounters,
    /// A graph of one window ([`LiveGraph::for_window`]): the bucket starts `[lo, hi)` that
    /// `snapshot(from, to)` would merge all go to the bucket `lo`; other times are dropped.
    fold: Option<(i64, i64)>,
    /// Buckets trimmed by the horizon since the last `take_trimmed`.
    trimmed: Vec<StoredBucket>,
    /// Each service's most frequent namespace, environment, zone, ...
    attributes: AttributeTable,
}

impl std::fmt::Debug for LiveGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveGraph")
            .field("config", &self.config)
            .field("counters", &self.counters())
            .finish()
    }
}

/// A window's buckets, taken from the graph but not yet merged into a [`Snapshot`].
#[derive(Debug, Clone)]
pub struct Window {
    pub(crate) buckets: Vec<Arc<Bucket>>,
    /// Each bucket's start, in the order of `buckets`.
    starts: Vec<i64>,
    from_ns: i64,
    to_ns: i64,
    /// The services' most frequent resource attributes when the window was taken.
    attributes: Arc<FastMap<Arc<str>, NodeAttributes>>,
}

impl Window {
    /// Merges the buckets, chooses display names and finds the loops.
    pub fn into_snapshot(self) -> Snapshot {
        let mut stats = WindowStats::default();
        for bucket in &self.buckets {
            stats.add(bucket);
        }
        let mut snapshot = stats.into_snapshot(self.from_ns, self.to_ns);
        self.attach_attributes(&mut snapshot);
        snapshot
    }

    /// Gives each service node its attributes (databases, queues and external nodes send no
    /// spans and have none).
    fn attach_attributes(&self, snapshot: &mut Snapshot) {
        if self.attributes.is_empty() {
            return;
        }
        for node in &mut snapshot.nodes {
            if node.kind == NodeKind::Service
                && let Some(values) = self.attributes.get(node.id.as_str())
            {
                node.attributes = values.clone();
            }
        }
    }

    /// How many buckets the window holds.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Whether both windows hold the very same buckets: a bucket the graph stage changed
    /// since `other` was taken is a new allocation (it copies a bucket a reader holds before
    /// changing it), so a cached result of `other` is still exact when this is true.
    pub fn same_buckets(&self, other: &Window) -> bool {
        self.buckets.len() == other.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&other.buckets)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// Merges the buckets into figures only: [`Window::into_snapshot`] without the loops, and
    /// without giving up the buckets.
    pub fn figures(&self) -> Snapshot {
        let mut stats = WindowStats::default();
        for bucket in &self.buckets {
            stats.add(bucket);
        }
        let mut snapshot = stats.into_figures(self.from_ns, self.to_ns);
        self.attach_attributes(&mut snapshot);
        snapshot
    }

    /// A window made of stored buckets: those starting in `[from_ns, to_ns)`.
    pub fn from_stored(from_ns: i64, to_ns: i64, stored: &[StoredBucket]) -> Window {
        let (starts, buckets) = stored
            .iter()
            .filter(|b| (from_ns..to_ns).contains(&b.start_ns))
            .map(|b| (b.start_ns, b.bucket.clone()))
            .unzip();
        Window {
            buckets,
            starts,
            from_ns,
            to_ns,
            attributes: Arc::default(),
        }
    }

    /// The window's buckets with their starts, shared, not copied: what a cluster's ingester
    /// sends a querier, which merges them with the other ingesters' ([`Window::merge`]).
    pub fn stored(&self) -> Vec<StoredBucket> {
        self.starts
            .iter()
            .zip(&self.buckets)
            .map(|(&start_ns, bucket)| StoredBucket {
                start_ns,
                bucket: bucket.clone(),
            })
            .collect()
    }

    /// This window and `other` (the same window's buckets from another source, e.g.
    /// another ingester of a cluster) as one: the buckets of both, so that merging them adds
    /// the counters and merges the latency sketches of the same edge.
    pub fn merge(mut self, other: Window) -> Window {
        self.buckets.extend(other.buckets);
        self.starts.extend(other.starts);
        self.attributes = merged_attributes(self.attributes, other.attributes);
        self
    }

    /// This window followed by `later` (which should start where this one ends): one window
    /// over both, e.g. an old part rebuilt from stored spans and a recent part from memory.
    pub fn join(mut self, later: Window) -> Window {
        self.buckets.extend(later.buckets);
        self.starts.extend(later.starts);
        Window {
            buckets: self.buckets,
            starts: self.starts,
            from_ns: self.from_ns,
            to_ns: later.to_ns,
            attributes: merged_attributes(self.attributes, later.attributes),
        }
    }
}

/// A window's buckets merged, kept to answer a later window of mostly the same buckets at
/// the cost of what changed: a live window that slid by a bucket, or whose newest buckets
/// took new spans (the graph stage copies a bucket a reader holds before it changes it, so a
/// changed bucket is a new allocation), takes the old buckets away and adds the new ones,
/// instead of merging every bucket again. The result equals a fresh merge of the window
/// (the property test in `live_tests.rs`).
#[derive(Debug, Default)]
pub struct MergedWindow {
    /// The merged buckets with their starts, by address (each bucket is merged once).
    members: FastMap<usize, (i64, Arc<Bucket>)>,
    stats: WindowStats,
}

fn address(bucket: &Arc<Bucket>) -> usize {
    Arc::as_ptr(bucket) as usize
}

/// The buckets to take away (by address) and to add (with their starts).
type Changes = (Vec<usize>, Vec<(i64, Arc<Bucket>)>);

impl MergedWindow {
    /// The window's buckets merged from scratch.
    pub fn new(window: &Window) -> Self {
        let mut merged = MergedWindow::default();
        for (start, bucket) in window.starts.iter().zip(&window.buckets) {
            if merged
                .members
                .insert(address(bucket), (*start, bucket.clone()))
                .is_none()
            {
                merged.stats.add(bucket);
            }
        }
        merged
    }

    /// The buckets to take away and to add to turn this into `window`; `None` when doing so
    /// costs more than merging `window` from scratch.
    fn changes(&self, window: &Window) -> Option<Changes> {
        let wanted: FastSet<usize> = window.buckets.iter().map(address).collect();
        let added: Vec<(i64, Arc<Bucket>)> = window
            .starts
            .iter()
            .zip(&window.buckets)
            .filter(|(_, b)| !self.members.contains_key(&address(b)))
            .map(|(start, b)| (*start, b.clone()))
            .collect();
        let removed: Vec<usize> = self
            .members
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        (removed.len() + added.len() < wanted.len().max(1)).then_some((removed, added))
    }

    /// How many buckets [`MergedWindow::update`] would take away and add for `window`, or
    /// `None` when it would merge from scratch: for choosing among kept windows.
    pub fn distance(&self, window: &Window) -> Option<usize> {
        self.changes(window)
            .map(|(removed, added)| removed.len() + added.len())
    }

    /// Brings the merge up to date with `window`: by taking away and adding the buckets
    /// that differ, or from scratch when most of them do. A bucket that took new spans is
    /// taken away and its grown copy (same start) added: the copy is passed along as its
    /// successor, so a latency range it still holds is not searched for in every bucket.
    pub fn update(&mut self, window: &Window) {
        let Some((removed, added)) = self.changes(window) else {
            *self = MergedWindow::new(window);
            return;
        };
        let gone: Vec<(i64, Arc<Bucket>)> = removed
            .iter()
            .filter_map(|a| self.members.remove(a))
            .collect();
        if !gone.is_empty() {
            let kept: Vec<&Bucket> = self.members.values().map(|(_, b)| &**b).collect();
            for (start, bucket) in &gone {
                let successors: Vec<&Bucket> = added
                    .iter()
                    .filter(|(s, _)| s == start)
                    .map(|(_, b)| &**b)
                    .collect();
                self.stats.remove(bucket, &kept, &successors);
            }
        }
        for (start, bucket) in added {
            let merged = bucket.clone();
            if self
                .members
                .insert(address(&bucket), (start, merged))
                .is_none()
            {
                self.stats.add(&bucket);
            }
        }
    }

    /// The snapshot of `window` (which this was last brought up to date with): what
    /// [`Window::into_snapshot`] gives.
    pub fn snapshot(&self, window: &Window) -> Snapshot {
        let mut snapshot = self.stats.snapshot(window.from_ns, window.to_ns);
        window.attach_attributes(&mut snapshot);
        snapshot
    }

    /// Whether the kept figures are exactly those of a fresh merge of `window`, down to the
    /// latency sketches' ranges, which no snapshot shows directly.
    #[cfg(test)]
    pub(crate) fn equals_a_fresh_merge_of(&self, window: &Window) -> bool {
        self.stats == MergedWindow::new(window).stats
    }

    /// The part of `window`'s snapshot (which this was last brought up to date with) that a
    /// neighbourhood of `focus` needs ([`crate::filter`] it with that focus), or `None` when
    /// the window has no node of that id.
    pub fn around(&self, window: &Window, focus: &Focus) -> Option<Around> {
        let mut around = self.stats.around(window.from_ns, window.to_ns, focus)?;
        window.attach_attributes(&mut around.snapshot);
        Some(around)
    }

    /// [`MergedWindow::snapshot`] without the loops: what [`Window::figures`] gives.
    pub fn figures(&self, window: &Window) -> Snapshot {
        let mut snapshot = self.stats.figures_only(window.from_ns, window.to_ns);
        window.attach_attributes(&mut snapshot);
        snapshot
    }
}

/// Both tables of attributes, `first`'s values where both know a service.
fn merged_attributes(
    first: Arc<FastMap<Arc<str>, NodeAttributes>>,
    second: Arc<FastMap<Arc<str>, NodeAttributes>>,
) -> Arc<FastMap<Arc<str>, NodeAttributes>> {
    if second.is_empty() {
        return first;
    }
    if first.is_empty() {
        return second;
    }
    let mut merged = (*second).clone();
    merged.extend(first.iter().map(|(k, v)| (k.clone(), v.clone())));
    Arc::new(merged)
}

struct StoredSpan {
    parent: Option<SpanId>,
    kind: SpanKind,
    service: Arc<str>,
    start_ns: i64,
    duration_ns: i64,
    error: bool,
    bytes: Option<u64>,
    /// CLIENT: the database or external node it called, used when no SERVER answers.
    /// PRODUCER and CONSUMER: the queue named by `messaging.destination.name`.
    target: Option<NodeKey>,
    /// A CLIENT with `db.system`: its call is counted at once, to the database node.
    database: bool,
    /// CLIENT: a SERVER child was found. PRODUCER: a CONSUMER found it.
    paired: bool,
    waiting: Waiting,
    entered: Entered,
}

enum Waiting {
    Nothing,
    /// A SERVER span whose parent has not arrived.
    Parent,
    /// A CONSUMER span whose parent or linked producers have not all arrived.
    Producers(Box<ConsumerProgress>),
}

struct ConsumerProgress {
    /// The parent first (when there is one), then the links, without repeats.
    candidates: Vec<SpanKey>,
    has_parent: bool,
    found: Vec<Candidate>,
    /// The missing candidates are in `LiveGraph::waiting`.
    registered: bool,
}

enum Candidate {
    Missing,
    NotProducer,
    Producer(ProducerSeen),
}

/// What a consumer needs of its producer, copied when both are present.
struct ProducerSeen {
    service: Arc<str>,
    start_ns: i64,
    queue: Option<NodeKey>,
    bytes: Option<u64>,
}

struct TraceState {
    last_activity_ns: i64,
    /// The earliest start of its spans: traces are finalized in the order of (this, trace
    /// id), so a trace whose producers reached consumers of another is finalized first.
    first_start_ns: i64,
    /// The trace's pending spans, in arrival order.
    spans: Vec<PendingSpan>,
    /// Span id to position in `spans`, once the trace has more spans than a scan suits.
    index: Option<FastMap<SpanId, u32>>,
    /// Calls whose caller is a span of this trace, for amplification.
    calls: Vec<CallRecord>,
    /// Keys this trace's spans registered in `LiveGraph::waiting`.
    awaited: Vec<SpanKey>,
    /// Consumers and producers paired across traces; `None` for nearly every trace.
    links: Option<Box<TraceLinks>>,
}

/// A trace's pairings with other traces (a CONSUMER placed after PRODUCER spans of other
/// traces, found by span link): what carries a flow's path from one trace to the next.
#[derive(Default)]
struct TraceLinks {
    /// Traces holding producers that consumers of this trace were placed after (repeats
    /// allowed): this trace waits for them to be finalized.
    upstream: Vec<TraceId>,
    /// Producers of this trace that consumers of other traces were placed after.
    downstream: Vec<Downstream>,
    /// Paths handed over by finalized upstream traces, per consumer span and queue.
    seeds: Vec<SeedPaths>,
}

struct Downstream {
    producer: SpanId,
    consumer: SpanKey,
    /// The queue between them (the consumer's, else the producer's).
    queue: Option<NodeKey>,
}

struct SeedPaths {
    consumer: SpanId,
    queue: Option<NodeKey>,
    /// At most `MAX_PATHS`, the smallest: the same whatever order producers were finalized in.
    paths: Vec<Path>,
}

impl TraceLinks {
    fn add_seed(&mut self, consumer: SpanId, queue: &Option<NodeKey>, paths: &[Path]) {
        let at = match self
            .seeds
            .iter()
            .position(|s| s.consumer == consumer && s.queue == *queue)
        {
            Some(at) => at,
            None => {
                self.seeds.push(SeedPaths {
                    consumer,
                    queue: queue.clone(),
                    paths: Vec::new(),
                });
                self.seeds.len() - 1
            }
        };
        let seed = &mut self.seeds[at];
        seed.paths.extend_from_slice(paths);
        keep_distinct(&mut seed.paths);
    }

    fn heap_bytes(&self) -> usize {
        let paths: usize = self
            .seeds
            .iter()
            .map(|s| {
                s.paths.capacity() * std::mem::size_of::<Path>()
                    + s.paths
                        .iter()
                        .map(|p| p.capacity() * std::mem::size_of::<NodeKey>())
                        .sum::<usize>()
            })
            .sum();
        std::mem::size_of::<Self>()
            + self.upstream.capacity() * std::mem::size_of::<TraceId>()
            + self.downstream.capacity() * std::mem::size_of::<Downstream>()
            + self.seeds.capacity() * std::mem::size_of::<SeedPaths>()
            + paths
    }
}

struct PendingSpan {
    id: SpanId,
    span: StoredSpan,
}

/// Traces up to this many spans find a span by scanning their ids; larger ones keep an index.
const SCAN_SPANS: usize = 16;

/// Names kept in `LiveGraph::recent_names`.
const RECENT_NAMES: usize = 4;

impl TraceState {
    fn new(now_ns: i64) -> Self {
        TraceState {
            last_activity_ns: now_ns,
            first_start_ns: i64::MAX,
            spans: Vec::new(),
            index: None,
            calls: Vec::new(),
            awaited: Vec::new(),
            links: None,
        }
    }

    fn position(&self, id: &SpanId) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(id).map(|&at| at as usize),
            None => self.spans.iter().position(|pending| pending.id == *id),
        }
    }

    fn get(&self, id: &SpanId) -> Option<&StoredSpan> {
        self.position(id).map(|at| &self.spans[at].span)
    }

    fn get_mut(&mut self, id: &SpanId) -> Option<&mut StoredSpan> {
        self.position(id).map(|at| &mut self.spans[at].span)
    }

    fn push(&mut self, id: SpanId, span: StoredSpan) {
        self.first_start_ns = self.first_start_ns.min(span.start_ns);
        let at = self.spans.len();
        self.spans.push(PendingSpan { id, span });
        match &mut self.index {
            Some(index) => {
                index.insert(id, at as u32);
            }
            None if self.spans.len() > SCAN_SPANS => {
                let index = self
                    .spans
                    .iter()
                    .enumerate()
                    .map(|(at, pending)| (pending.id, at as u32))
                    .collect();
                self.index = Some(index);
            }
            None => {}
        }
    }
}

/// One inferred call.
struct Call {
    edge: EdgeKey,
    time_ns: i64,
    latency_ns: i64,
    error: bool,
    bytes: Option<u64>,
    caller: Option<SpanKey>,
}

impl LiveGraph {
    pub fn new(config: GraphConfig) -> Self {
        let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Self {
            bucket_ns: nanos(config.bucket).max(1),
            ttl_ns: nanos(config.pairing_ttl),
            horizon_ns: nanos(config.horizon),
            config,
            traces: FastMap::default(),
            pending_spans: 0,
            idle_order: BTreeSet::new(),
            waiting: FastMap::default(),
            buckets: BTreeMap::new(),
            trimmed_before_ns: None,
            names: FastSet::default(),
            recent_names: Default::default(),
            next_recent: 0,
            counters: GraphCounters::default(),
            fold: None,
            trimmed: Vec::new(),
            attributes: AttributeTable::default(),
        }
    }

    /// A graph that keeps only the statistics of `[from_ns, to_ns)`, in a single bucket: what
    /// rebuilding an old window from stored spans needs. Fed the same spans, its
    /// `snapshot(from_ns, to_ns)` equals a live graph's (same bucket rule, same pairing), in
    /// the memory of one bucket whatever the window's length. It never trims by horizon.
    pub fn for_window(config: GraphConfig, from_ns: i64, to_ns: i64) -> Self {
        let fold = (
            config.bucket_start_at_or_after(from_ns),
            config.bucket_start_at_or_after(to_ns.max(from_ns)),
        );
        let mut graph = Self::new(config);
        graph.fold = Some(fold);
        graph
    }

    pub fn config(&self) -> &GraphConfig {
        &self.config
    }

    /// Feeds spans (storage schema). Edges are inferred as soon as both halves are present,
    /// whatever the arrival order; stats go to the bucket of the edge's event time. Rows
    /// with invalid ids, or a batch in another schema, are counted in `rows_rejected`.
    pub fn ingest(&mut self, batch: &RecordBatch, now_ns: i64) {
        let Some(columns) = SpanColumns::new(batch) else {
            self.counters.rows_rejected += batch.num_rows() as u64;
            return;
        };
        // A node's resource attributes, read once per run of one service's rows and
        // counted for every span of the run.
        let mut run: Option<(&str, usize)> = None;
        let mut values = Vec::new();
        for row in 0..=columns.len() {
            let service = (row < columns.len())
                .then(|| columns.service(row))
                .flatten();
            if let Some((first, at)) = run
                && (row == columns.len() || service != Some(first))
            {
                columns.node_attributes(at, &mut values);
                let name = self.intern(first);
                self.attributes
                    .note(&name, &values, (row - at) as u64, now_ns);
                run = None;
            }
            if row == columns.len() {
                break;
            }
            if run.is_none() {
                run = service.map(|service| (service, row));
            }
            match columns.row(row) {
                Some(span) => self.add_span(span, now_ns),
                None => self.counters.rows_rejected += 1,
            }
        }
        self.attributes.refresh();
    }

    /// Finalizes traces idle for the pairing TTL (an unpaired CLIENT becomes an edge to a
    /// virtual database or external node; per-trace loops and amplification are counted),
    /// then drops buckets older than the horizon.
    pub fn advance(&mut self, now_ns: i64) {
        let mut due: Vec<(i64, TraceId, bool)> = Vec::new();
        while let Some(&(last_activity_ns, trace)) = self.idle_order.first() {
            if now_ns.saturating_sub(last_activity_ns) < self.ttl_ns {
                break;
            }
            self.idle_order.pop_first();
            if let Some(state) = self.traces.get(&trace) {
                due.push((state.first_start_ns, trace, state.links.is_some()));
            }
        }
        // In flow order, so a trace hands the paths that reached its producers to the traces
        // of their consumers before those are walked, whatever order the spans came in.
        due.sort_unstable();
        for (_, trace, linked) in due {
            match linked.then(|| self.upstream_pending_until(trace)).flatten() {
                Some(until_ns) => self.postpone(trace, until_ns),
                None => self.finalize_trace(trace, false),
            }
        }
        let first_kept = self.bucket_start(now_ns.saturating_sub(self.horizon_ns));
        if self.fold.is_none() && self.trimmed_before_ns.is_none_or(|t| first_kept > t) {
            self.trimmed_before_ns = Some(first_kept);
            let kept = self.buckets.split_off(&first_kept);
            let gone = std::mem::replace(&mut self.buckets, kept);
            self.trimmed.extend(
                gone.into_iter()
                    .map(|(start_ns, bucket)| StoredBucket { start_ns, bucket }),
            );
        }
        self.attributes
            .forget(now_ns.saturating_sub(self.horizon_ns));
        self.recent_names = Default::default();
        self.names.retain(|name| Arc::strong_count(name) > 1);
        // Give back what a burst took: hash tables never shrink by themselves.
        shrink_if_sparse(&mut self.traces);
        shrink_if_sparse(&mut self.waiting);
    }

    /// The graph for the window `[from_ns, to_ns)`: the buckets whose start lies in it,
    /// merged. A window finer than a bucket is widened to whole buckets by this rule.
    pub fn snapshot(&self, from_ns: i64, to_ns: i64) -> Snapshot {
        self.window(from_ns, to_ns).into_snapshot()
    }

    /// The first half of [`LiveGraph::snapshot`]: the window's buckets, shared, not copied.
    /// A reader holding a lock on the graph takes only this under it (microseconds), and
    /// merges, names and finds loops with [`Window::into_snapshot`] after letting go; the
    /// writer copies a bucket only if it must change one a reader still holds.
    pub fn window(&self, from_ns: i64, to_ns: i64) -> Window {
        let (starts, buckets) = if from_ns < to_ns {
            self.buckets
                .range(from_ns..to_ns)
                .map(|(start, b)| (*start, b.clone()))
                .unzip()
        } else {
            (Vec::new(), Vec::new())
        };
        Window {
            buckets,
            starts,
            from_ns,
            to_ns,
            attributes: self.attributes.top(),
        }
    }

    pub fn counters(&self) -> GraphCounters {
        GraphCounters {
            pending_spans: self.pending_spans as u64,
            pending_traces: self.traces.len() as u64,
            buckets: self.buckets.len() as u64,
            ..self.counters
        }
    }

    /// Oldest bucket start still in memory (older windows must come from SQL).
    pub fn horizon_start_ns(&self) -> Option<i64> {
        self.buckets.first_key_value().map(|(start, _)| *start)
    }

    /// The buckets the horizon has dropped since the last call, oldest first: final (no
    /// later span can change them), for the caller to keep if it wants old windows cheap.
    /// Not taken, they pile up, so a caller that keeps none must still take them.
    pub fn take_trimmed(&mut self) -> Vec<StoredBucket> {
        std::mem::take(&mut self.trimmed)
    }

    /// Buckets starting before this were dropped by the horizon: a window starting earlier
    /// must be rebuilt from stored spans. `None` until the first trim.
    pub fn trimmed_before_ns(&self) -> Option<i64> {
        self.trimmed_before_ns
    }

    /// A rough count of the heap bytes held, for a gauge: the pairing store (with its hash
    /// tables' slack) and the buckets.
    pub fn approximate_memory_bytes(&self) -> usize {
        let traces: usize = self.traces.capacity()
            * (std::mem::size_of::<(TraceId, TraceState)>() + 1)
            + self
                .traces
                .values()
                .map(|t| {
                    t.spans.capacity() * std::mem::size_of::<PendingSpan>()
                        + t.index.as_ref().map_or(0, |index| {
                            index.capacity() * (std::mem::size_of::<(SpanId, u32)>() + 1)
                        })
                        + t.calls.capacity() * std::mem::size_of::<CallRecord>()
                        + t.links.as_ref().map_or(0, |links| links.heap_bytes())
                })
                .sum::<usize>();
        let buckets: usize = self.buckets.values().map(|b| b.heap_bytes()).sum();
        traces + buckets
    }

    fn add_span(&mut self, row: SpanRow<'_>, now_ns: i64) {
        let key = row.key;
        if self.span(&key).is_some() {
            self.counters.duplicate_spans += 1;
            return;
        }
        self.counters.spans_seen += 1;
        let service = self.intern(row.service);
        self.record_service_span(&service, &row);
        let target = match row.kind {
            SpanKind::Client => virtual_target(&row.attributes).map(|(kind, name)| NodeKey {
                kind,
                name: self.intern(name),
            }),
            SpanKind::Producer | SpanKind::Consumer => row
                .attributes
                .destination
                .map(|name| NodeKey::queue(&self.intern(name))),
            _ => None,
        };
        let waiting = match row.kind {
            SpanKind::Consumer => {
                Waiting::Producers(Box::new(ConsumerProgress::new(key, row.parent, &row.links)))
            }
            _ => Waiting::Nothing,
        };
        let span = StoredSpan {
            parent: row.parent,
            kind: row.kind,
            service,
            start_ns: row.start_ns,
            duration_ns: row.duration_ns,
            error: row.error,
            bytes: row.attributes.bytes,
            target,
            database: row.kind == SpanKind::Client && row.attributes.db_system.is_some(),
            paired: false,
            waiting,
            entered: Entered::NoHop,
        };
        let immediate = immediate_call(&key, &span);
        self.touch_trace(key.trace, now_ns).push(key.span, span);
        self.pending_spans += 1;

        if let Some(call) = immediate {
            if call.edge.target.kind == NodeKind::Database {
                self.counters.virtual_edges += 1;
            }
            self.record_call(call);
        }
        match row.kind {
            SpanKind::Server => self.resolve_server(key),
            SpanKind::Consumer => self.resolve_consumer(key),
            _ => {}
        }
        if !self.waiting.is_empty()
            && let Some(waiters) = self.waiting.remove(&key)
        {
            for waiter in waiters {
                self.resolve_waiter(waiter);
            }
        }
        self.evict_beyond_bound();
    }

    fn resolve_waiter(&mut self, key: SpanKey) {
        match self.span(&key).map(|s| s.kind) {
            Some(SpanKind::Server) => self.resolve_server(key),
            Some(SpanKind::Consumer) => self.resolve_consumer(key),
            _ => {}
        }
    }

    /// A SERVER span and its parent: a CLIENT's call (even in the same service: a service
    /// calling itself over the network is a self-loop), or a call made without a CLIENT
    /// span from another service. A SERVER under a database CLIENT was already counted.
    fn resolve_server(&mut self, key: SpanKey) {
        let Some(state) = self.traces.get_mut(&key.trace) else {
            return;
        };
        let Some(at) = state.position(&key.span) else {
            return;
        };
        let Some(parent_id) = state.spans[at].span.parent else {
            return;
        };
        let parent_key = SpanKey {
            trace: key.trace,
            span: parent_id,
        };
        let Some(parent_at) = state.position(&parent_id) else {
            let server = &mut state.spans[at].span;
            if matches!(server.waiting, Waiting::Nothing) {
                server.waiting = Waiting::Parent;
                self.wait_for(parent_key, key);
            }
            return;
        };
        let (parent, server) = (&state.spans[parent_at].span, &state.spans[at].span);
        let edge = EdgeKey {
            source: NodeKey::service(&parent.service),
            target: NodeKey::service(&server.service),
            kind: EdgeKind::Sync,
        };
        let is_client = parent.kind == SpanKind::Client;
        let call = if is_client && parent.database {
            None
        } else if is_client {
            Some(Call {
                edge,
                time_ns: parent.start_ns,
                latency_ns: parent.duration_ns,
                error: parent.error || server.error,
                bytes: parent.bytes.or(server.bytes),
                caller: parent.parent.map(|span| SpanKey {
                    trace: key.trace,
                    span,
                }),
            })
        } else if parent.service != server.service {
            Some(Call {
                edge,
                time_ns: server.start_ns,
                latency_ns: server.duration_ns,
                error: server.error,
                bytes: server.bytes,
                caller: Some(parent_key),
            })
        } else {
            None
        };
        if is_client {
            state.spans[parent_at].span.paired = true;
        }
        let server = &mut state.spans[at].span;
        server.waiting = Waiting::Nothing;
        if call.is_some() {
            server.entered = Entered::Direct;
        }
        if let Some(call) = call {
            self.record_call(call);
        }
    }

    /// A CONSUMER span waits until its parent and every linked span have arrived (or its
    /// trace is finalized), then is placed after the producers among them.
    fn resolve_consumer(&mut self, key: SpanKey) {
        let Some(consumer) = self.span_mut(&key) else {
            return;
        };
        let Waiting::Producers(mut progress) =
            std::mem::replace(&mut consumer.waiting, Waiting::Nothing)
        else {
            return;
        };
        let mut missing = Vec::new();
        let mut other_traces: Vec<(SpanKey, Option<NodeKey>)> = Vec::new();
        for (candidate, found) in progress.candidates.iter().zip(progress.found.iter_mut()) {
            if !matches!(found, Candidate::Missing) {
                continue;
            }
            let Some(span) = self.span_mut(candidate) else {
                missing.push(*candidate);
                continue;
            };
            if span.kind != SpanKind::Producer {
                *found = Candidate::NotProducer;
                continue;
            }
            span.paired = true;
            if candidate.trace != key.trace {
                other_traces.push((*candidate, span.target.clone()));
            }
            *found = Candidate::Producer(ProducerSeen {
                service: span.service.clone(),
                start_ns: span.start_ns,
                queue: span.target.clone(),
                bytes: span.bytes,
            });
        }
        if !other_traces.is_empty() {
            let own_queue = self.span(&key).and_then(|c| c.target.clone());
            for (producer, queue) in other_traces {
                self.link_traces(key, producer, own_queue.clone().or(queue));
            }
        }
        if missing.is_empty() {
            self.place_consumer(key, &progress);
            return;
        }
        if !progress.registered {
            progress.registered = true;
            for awaited in missing {
                self.wait_for(awaited, key);
            }
        }
        if let Some(consumer) = self.span_mut(&key) {
            consumer.waiting = Waiting::Producers(progress);
        }
    }

    /// The consumer's own queue (`messaging.destination.name`) when it has one; otherwise
    /// one call per queue of its producers, and per service of producers without a queue.
    /// Latency is publish to consume (consumer start - first producer start) when a producer
    /// is known, else the consumer's own duration.
    fn place_consumer(&mut self, key: SpanKey, progress: &ConsumerProgress) {
        let Some(consumer) = self.span(&key) else {
            return;
        };
        let parent_producer = match progress.found.first() {
            Some(Candidate::Producer(producer)) if progress.has_parent => Some(producer),
            _ => None,
        };
        let parent_caller = parent_producer.map(|_| progress.candidates[0]);
        let producers: Vec<(usize, &ProducerSeen)> = progress
            .found
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                Candidate::Producer(p) => Some((i, p)),
                _ => None,
            })
            .collect();
        let consumer_node = NodeKey::service(&consumer.service);
        let call_from = |source: NodeKey, first_publish_ns: Option<i64>, bytes, caller| Call {
            edge: EdgeKey {
                source,
                target: consumer_node.clone(),
                kind: EdgeKind::Async,
            },
            time_ns: consumer.start_ns,
            latency_ns: first_publish_ns.map_or(consumer.duration_ns, |t| consumer.start_ns - t),
            error: consumer.error,
            bytes,
            caller,
        };
        let sum_bytes = |items: &mut dyn Iterator<Item = Option<u64>>| {
            items.fold(None, |sum: Option<u64>, b| match (sum, b) {
                (Some(s), Some(b)) => Some(s.saturating_add(b)),
                (s, b) => s.or(b),
            })
        };

        let mut calls = Vec::new();
        let entered;
        if let Some(queue) = &consumer.target {
            let first_publish = producers.iter().map(|(_, p)| p.start_ns).min();
            let bytes = consumer
                .bytes
                .or_else(|| sum_bytes(&mut producers.iter().map(|(_, p)| p.bytes)));
            calls.push(call_from(
                queue.clone(),
                first_publish,
                bytes,
                parent_caller,
            ));
            entered = match parent_producer {
                Some(_) => Entered::ViaQueue(queue.clone()),
                None => Entered::NoHop,
            };
        } else {
            // source -> (first publish, producers' bytes, includes the parent)
            let mut groups: BTreeMap<NodeKey, (i64, Option<u64>, bool)> = BTreeMap::new();
            for (index, producer) in &producers {
                let source = producer
                    .queue
                    .clone()
                    .unwrap_or_else(|| NodeKey::service(&producer.service));
                let is_parent = *index == 0 && progress.has_parent;
                let group = groups
                    .entry(source)
                    .or_insert((producer.start_ns, None, false));
                group.0 = group.0.min(producer.start_ns);
                group.1 = sum_bytes(&mut [group.1, producer.bytes].into_iter());
                group.2 |= is_parent;
            }
            let single = groups.len() == 1;
            for (source, (first_publish, bytes, has_parent)) in groups {
                let bytes = if single {
                    consumer.bytes.or(bytes)
                } else {
                    bytes
                };
                let caller = if has_parent { parent_caller } else { None };
                calls.push(call_from(source, Some(first_publish), bytes, caller));
            }
            entered = match parent_producer {
                Some(ProducerSeen { queue: Some(q), .. }) => Entered::ViaQueue(q.clone()),
                Some(_) => Entered::Direct,
                None => Entered::NoHop,
            };
        }
        if calls.is_empty() {
            self.counters.unplaced += 1;
        }
        if let Some(consumer) = self.span_mut(&key) {
            consumer.entered = entered;
        }
        for call in calls {
            self.record_call(call);
        }
    }

    fn finalize_trace(&mut self, trace: TraceId, evicted: bool) {
        let Some(count) = self.traces.get(&trace).map(|state| state.spans.len()) else {
            return;
        };
        for at in 0..count {
            self.expire_span(trace, at);
        }
        let Some(state) = self.traces.remove(&trace) else {
            return;
        };
        self.pending_spans = self.pending_spans.saturating_sub(state.spans.len());
        self.idle_order.remove(&(state.last_activity_ns, trace));

        for group in caller_groups(&state.calls) {
            if let Some(bucket) = self.existing_bucket(group.time_ns)
                && let Some(stats) = bucket.edges.get_mut(&group.edge)
            {
                stats.amplified_calls += group.calls;
                stats.callers += 1;
            }
        }

        // Empty vectors: no allocation for the traces without links.
        let no_links = TraceLinks::default();
        let links = state.links.as_deref().unwrap_or(&no_links);
        let seeds: Vec<Seed<'_>> = links
            .seeds
            .iter()
            .map(|seed| Seed {
                span: seed.consumer,
                queue: seed.queue.as_ref(),
                paths: &seed.paths,
            })
            .collect();
        let mut wanted: Vec<SpanId> = links.downstream.iter().map(|d| d.producer).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let trace_spans: Vec<TraceSpan<'_>> = state
            .spans
            .iter()
            .map(|pending| TraceSpan {
                id: pending.id,
                parent: pending.span.parent,
                service: &pending.span.service,
                start_ns: pending.span.start_ns,
                entered: &pending.span.entered,
            })
            .collect();
        let walk = walk_trace(&trace_spans, &seeds, &wanted);
        for (cycle, time_ns) in walk.cycles {
            if let Some(bucket) = self.bucket_for(time_ns) {
                *bucket.trace_loops.entry(cycle).or_default() += 1;
            }
        }
        let order = (state.first_start_ns, trace);
        for downstream in &links.downstream {
            let Ok(slot) = wanted.binary_search(&downstream.producer) else {
                continue;
            };
            self.hand_over(order, downstream, &walk.paths[slot]);
        }

        for awaited in &state.awaited {
            if let Some(waiters) = self.waiting.get_mut(awaited) {
                waiters.retain(|w| w.trace != trace);
                if waiters.is_empty() {
                    self.waiting.remove(awaited);
                }
            }
        }
        self.counters.traces_finalized += 1;
        if evicted {
            self.counters.evicted += state.spans.len() as u64;
        }
    }

    /// The span at `at` of `trace`, still waiting for its other half when its trace is
    /// finalized.
    fn expire_span(&mut self, trace: TraceId, at: usize) {
        let Some(pending) = self
            .traces
            .get_mut(&trace)
            .and_then(|state| state.spans.get_mut(at))
        else {
            return;
        };
        let key = SpanKey {
            trace,
            span: pending.id,
        };
        let span = &mut pending.span;
        match span.kind {
            SpanKind::Client if !span.database && !span.paired => {
                self.counters.unpaired_expired += 1;
                let Some(target) = span.target.clone() else {
                    self.counters.unplaced += 1;
                    return;
                };
                self.counters.virtual_edges += 1;
                let call = own_call(&key, span, target, EdgeKind::Sync);
                self.record_call(call);
            }
            SpanKind::Producer if span.target.is_none() && !span.paired => {
                self.counters.unpaired_expired += 1;
            }
            SpanKind::Server if matches!(span.waiting, Waiting::Parent) => {
                span.waiting = Waiting::Nothing;
                self.counters.unpaired_expired += 1;
            }
            SpanKind::Consumer => {
                if let Waiting::Producers(progress) =
                    std::mem::replace(&mut span.waiting, Waiting::Nothing)
                {
                    self.counters.unpaired_expired += 1;
                    self.place_consumer(key, &progress);
                }
            }
            _ => {}
        }
    }

    /// Records that the consumer `consumer` was placed after `producer`, a span of another
    /// trace, with `queue` between them.
    fn link_traces(&mut self, consumer: SpanKey, producer: SpanKey, queue: Option<NodeKey>) {
        if let Some(state) = self.traces.get_mut(&consumer.trace) {
            let links = state.links.get_or_insert_with(Box::default);
            links.upstream.push(producer.trace);
        }
        if let Some(state) = self.traces.get_mut(&producer.trace) {
            let links = state.links.get_or_insert_with(Box::default);
            links.downstream.push(Downstream {
                producer: producer.span,
                consumer,
                queue,
            });
        }
    }

    /// Gives the consumer's trace the paths that reached its producer, if that trace is still
    /// pending and comes later in flow order (a producer earlier in the flow than its
    /// consumer, which is how messages go; the order also keeps links that point both
    /// ways between two traces from making each wait for the other).
    fn hand_over(
        &mut self,
        producer_order: (i64, TraceId),
        downstream: &Downstream,
        paths: &[Path],
    ) {
        if paths.is_empty() {
            return;
        }
        let consumer = downstream.consumer;
        let Some(state) = self.traces.get_mut(&consumer.trace) else {
            return;
        };
        if (state.first_start_ns, consumer.trace) <= producer_order {
            return;
        }
        state.links.get_or_insert_with(Box::default).add_seed(
            consumer.span,
            &downstream.queue,
            paths,
        );
    }

    /// When a trace due for finalizing still has producers pending in traces before it in
    /// flow order: the latest activity among those, which it waits for so it is walked with
    /// their paths. Bounded: those traces are due within one TTL of now.
    fn upstream_pending_until(&self, trace: TraceId) -> Option<i64> {
        let state = self.traces.get(&trace)?;
        let links = state.links.as_ref()?;
        let order = (state.first_start_ns, trace);
        links
            .upstream
            .iter()
            .filter_map(|up| {
                let upstream = self.traces.get(up)?;
                ((upstream.first_start_ns, *up) < order).then_some(upstream.last_activity_ns)
            })
            .max()
            .filter(|&until| until > state.last_activity_ns)
    }

    fn postpone(&mut self, trace: TraceId, until_ns: i64) {
        let Some(state) = self.traces.get_mut(&trace) else {
            return;
        };
        self.idle_order.remove(&(state.last_activity_ns, trace));
        state.last_activity_ns = until_ns;
        self.idle_order.insert((until_ns, trace));
    }

    fn evict_beyond_bound(&mut self) {
        while self.pending_spans > self.config.max_pending_spans {
            let Some((_, trace)) = self.idle_order.pop_first() else {
                break;
            };
            self.finalize_trace(trace, true);
        }
    }

    fn record_call(&mut self, call: Call) {
        self.counters.edges_inferred += 1;
        if let Some(caller) = call.caller
            && let Some(state) = self.traces.get_mut(&caller.trace)
        {
            state.calls.push(CallRecord {
                edge: call.edge.clone(),
                caller: caller.span,
                time_ns: call.time_ns,
            });
        }
        let Some(bucket) = self.bucket_for(call.time_ns) else {
            return;
        };
        let stats = bucket.edges.entry(call.edge).or_default();
        stats.calls += 1;
        stats.errors += u64::from(call.error);
        stats.latency.add(call.latency_ns);
        stats.bytes = stats.bytes.saturating_add(call.bytes.unwrap_or(0));
    }

    /// Every span makes its service a node of the bucket; SERVER and CONSUMER spans are the
    /// calls it received.
    fn record_service_span(&mut self, service: &Arc<str>, row: &SpanRow<'_>) {
        let Some(bucket) = self.bucket_for(row.start_ns) else {
            return;
        };
        let stats = match bucket.services.get_mut(service) {
            Some(stats) => stats,
            None => bucket.services.entry(service.clone()).or_default(),
        };
        if matches!(row.kind, SpanKind::Server | SpanKind::Consumer) {
            stats.calls_in += 1;
            stats.errors_in += u64::from(row.error);
            stats.latency.add(row.duration_ns);
        }
    }

    fn span(&self, key: &SpanKey) -> Option<&StoredSpan> {
        self.traces.get(&key.trace)?.get(&key.span)
    }

    fn span_mut(&mut self, key: &SpanKey) -> Option<&mut StoredSpan> {
        self.traces.get_mut(&key.trace)?.get_mut(&key.span)
    }

    fn touch_trace(&mut self, trace: TraceId, now_ns: i64) -> &mut TraceState {
        match self.traces.entry(trace) {
            Entry::Vacant(vacant) => {
                self.idle_order.insert((now_ns, trace));
                vacant.insert(TraceState::new(now_ns))
            }
            Entry::Occupied(occupied) => {
                let state = occupied.into_mut();
                if now_ns > state.last_activity_ns {
                    self.idle_order.remove(&(state.last_activity_ns, trace));
                    self.idle_order.insert((now_ns, trace));
                    state.last_activity_ns = now_ns;
                }
                state
            }
        }
    }

    fn wait_for(&mut self, awaited: SpanKey, waiter: SpanKey) {
        self.waiting.entry(awaited).or_default().push(waiter);
        if let Some(state) = self.traces.get_mut(&waiter.trace) {
            state.awaited.push(awaited);
        }
    }

    fn bucket_start(&self, time_ns: i64) -> i64 {
        time_ns.div_euclid(self.bucket_ns) * self.bucket_ns
    }

    /// The key of the bucket `time_ns` counts in; `None` outside a one-window graph's window.
    fn bucket_key(&self, time_ns: i64) -> Option<i64> {
        let start = self.bucket_start(time_ns);
        match self.fold {
            None => Some(start),
            Some((lo, hi)) => (lo..hi).contains(&start).then_some(lo),
        }
    }

    /// The bucket of `time_ns`, created if needed; `None` (counted in `late_events`) when it
    /// was already trimmed, or outside a one-window graph's window (not counted).
    fn bucket_for(&mut self, time_ns: i64) -> Option<&mut Bucket> {
        let start = self.bucket_key(time_ns)?;
        if self.trimmed_before_ns.is_some_and(|t| start < t) {
            self.counters.late_events += 1;
            return None;
        }
        Some(Arc::make_mut(self.buckets.entry(start).or_default()))
    }

    fn existing_bucket(&mut self, time_ns: i64) -> Option<&mut Bucket> {
        let start = self.bucket_key(time_ns)?;
        self.buckets.get_mut(&start).map(Arc::make_mut)
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(recent) = self.recent_names.iter().flatten().find(|n| ***n == *name) {
            return recent.clone();
        }
        let interned = match self.names.get(name) {
            Some(interned) => interned.clone(),
            None => {
                let interned: Arc<str> = Arc::from(name);
                self.names.insert(interned.clone());
                interned
            }
        };
        self.recent_names[self.next_recent] = Some(interned.clone());
        self.next_recent = (self.next_recent + 1) % RECENT_NAMES;
        interned
    }
}

impl ConsumerProgress {
    fn new(key: SpanKey, parent: Option<SpanId>, links: &[SpanKey]) -> Self {
        let mut candidates: Vec<SpanKey> = parent
            .map(|span| SpanKey {
                trace: key.trace,
                span,
            })
            .into_iter()
            .collect();
        for link in links {
            if !candidates.contains(link) {
                candidates.push(*link);
            }
        }
        Self {
            found: candidates.iter().map(|_| Candidate::Missing).collect(),
            has_parent: parent.is_some(),
            candidates,
            registered: false,
        }
    }
}

fn shrink_if_sparse<K: std::hash::Hash + Eq, V>(map: &mut FastMap<K, V>) {
    let wanted = map.len().max(1024);
    if map.capacity() > 4 * wanted {
        map.shrink_to(2 * wanted);
    }
}

/// Calls counted the moment their span arrives: a PRODUCER to its queue, and a CLIENT with
/// `db.system` to its database (databases never report SERVER spans, so waiting for one
/// would only delay the edge by the TTL).
fn immediate_call(key: &SpanKey, span: &StoredSpan) -> Option<Call> {
    let wanted = match span.kind {
        SpanKind::Producer => EdgeKind::Async,
        SpanKind::Client if span.database => EdgeKind::Sync,
        _ => return None,
    };
    Some(own_call(key, span, span.target.clone()?, wanted))
}

/// A call measured entirely by one span (no other half): its service to `target`, with its
/// own start, duration, status and payload, attributed to its parent span.
fn own_call(key: &SpanKey, span: &StoredSpan, target: NodeKey, kind: EdgeKind) -> Call {
    Call {
        edge: EdgeKey {
            source: NodeKey::service(&span.service),
            target,
            kind,
        },
        time_ns: span.start_ns,
        latency_ns: span.duration_ns,
        error: span.error,
        bytes: span.bytes,
        caller: span.parent.map(|p| SpanKey {
            trace: key.trace,
            span: p,
        }),
    }
}

/// The node a CLIENT span calls when no SERVER span answers: named from `peer.service`,
/// then `server.address`, then `db.name` / `db.namespace`, then `db.system`; a database
/// when `db.system` is set, else an external peer.
fn virtual_target<'a>(attributes: &GraphAttributes<'a>) -> Option<(NodeKind, &'a str)> {
    let kind = match attributes.db_system {
        Some(_) => NodeKind::Database,
        None => NodeKind::External,
    };
    let name = attributes
        .peer_service
        .or(attributes.server_address)
        .or(attributes.db_name)
        .or(attributes.db_namespace)
        .or(attributes.db_system)?;
    Some((kind, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graph_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<LiveGraph>();
    }

    #[test]
    fn pending_spans_and_edge_stats_stay_small() {
        // The memory figures in the crate docs rest on these sizes.
        let span = std::mem::size_of::<PendingSpan>();
        let edge = std::mem::size_of::<(EdgeKey, crate::window::EdgeStats)>();
        println!("pending span entry: {span} bytes, edge stats entry: {edge} bytes");
        assert!(span <= 160, "{span}");
        assert!(edge <= 160, "{edge}");
    }
}

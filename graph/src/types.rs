//! The graph as callers see it: nodes, edges, feedback loops, the snapshot of a window and
//! the counters of the live builder. Plain values, no serde: JSON is made in `web`.

use std::sync::Arc;
use std::time::Duration;

/// What a node stands for. Only services send spans; the other kinds are inferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    Service,
    Database,
    Queue,
    External,
    /// Nodes folded together by `group_by` (never in a bucket, only in an answer).
    Group,
}

impl NodeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeKind::Service => "service",
            NodeKind::Database => "database",
            NodeKind::Queue => "queue",
            NodeKind::External => "external",
            NodeKind::Group => "group",
        }
    }
}

/// A request that waits for its answer (`Sync`), or a message handed over (`Async`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EdgeKind {
    Sync,
    Async,
}

impl EdgeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            EdgeKind::Sync => "sync",
            EdgeKind::Async => "async",
        }
    }
}

/// How an element of the graph is doing, worst last: judged against its own baseline and the
/// operator's objectives (the rules are in `flowscope_query::graph::health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum HealthLevel {
    #[default]
    Ok,
    Degraded,
    Failing,
}

impl HealthLevel {
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthLevel::Ok => "ok",
            HealthLevel::Degraded => "degraded",
            HealthLevel::Failing => "failing",
        }
    }
}

/// A health verdict and why: one sentence per figure beyond its limit, worst first; empty
/// when ok. A snapshot straight from the buckets is all ok until it is judged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    pub level: HealthLevel,
    pub reasons: Vec<String>,
}

/// One node of a window's graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The service name; a queue, database or external node whose name is also used by
    /// another node of the window is shown as `"queue:<name>"`, `"database:<name>"`, ...
    pub id: String,
    pub kind: NodeKind,
    /// Services: their SERVER and CONSUMER spans. Other kinds: the calls of incoming edges.
    pub calls_in: u64,
    pub errors_in: u64,
    /// Durations of the service's SERVER and CONSUMER spans; 0 for other kinds.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Its own figures and those of the calls it makes, judged.
    pub health: Health,
    /// Services: the most frequent value of each resource attribute of
    /// [`crate::NODE_ATTRIBUTE_KEYS`] they send; empty for the other kinds.
    pub attributes: crate::NodeAttributes,
    /// A group's attribute, value and members (`group_by`); `None` for any other node.
    pub group: Option<NodeGroup>,
}

/// What a group node stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroup {
    /// The attribute grouped by, e.g. `service.namespace`.
    pub key: String,
    pub value: String,
    /// The ids of the nodes folded into it, sorted.
    pub members: Vec<String>,
}

/// One edge of a window's graph: all calls from `source` to `target` of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub source: String,
    pub target: String,
    pub kind: EdgeKind,
    pub calls: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Payload bytes summed over the calls that reported a body size.
    pub bytes: u64,
    /// Calls per calling parent span (5.0 when each caller makes five calls); 0 when unknown.
    pub amplification: f64,
    /// Per-trace loops that went through this edge.
    pub trace_loops: u64,
    pub health: Health,
    /// Its calls per caller are beyond its own baseline's limit (a retry storm or a new
    /// fan-out); false until judged.
    pub amplified: bool,
}

impl Edge {
    /// The identity of an edge across windows.
    pub fn key(&self) -> (&str, &str, EdgeKind) {
        (&self.source, &self.target, self.kind)
    }
}

/// A cycle in the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackLoop {
    /// The nodes joined by `" -> "`, starting from the smallest id: stable across windows.
    /// The id and the lists are shared (`Arc`) between the reads of one edge set: a loop can
    /// be thousands of nodes long, and a big graph is read far more often than its edge set
    /// changes.
    pub id: Arc<str>,
    /// In cycle order, starting from the smallest id; a self-loop has one node.
    pub nodes: Arc<[Arc<str>]>,
    /// `(nodes[0], nodes[1])`, ..., `(nodes[last], nodes[0])`.
    pub edges: Arc<[(Arc<str>, Arc<str>)]>,
    /// Traffic round the loop: the smallest call count of its edges (sync and async calls
    /// between the same two nodes are added), 0 when one of its edges is not in the window.
    pub calls: u64,
    /// Traces that went round it.
    pub trace_loops: u64,
}

/// The graph of the window `[from_ns, to_ns)`, sorted: nodes by id, edges by
/// (source, target, kind), loops by id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub from_ns: i64,
    pub to_ns: i64,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub loops: Vec<FeedbackLoop>,
}

/// The live graph's own configuration; the binary builds it from its typed config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphConfig {
    /// Width of a statistics bucket: the finest window the live graph can answer.
    pub bucket: Duration,
    /// How long buckets are kept in memory; older windows come from SQL.
    pub horizon: Duration,
    /// How long a trace may stay idle before its spans stop waiting for their other half.
    pub pairing_ttl: Duration,
    /// Bound of the pairing store; beyond it whole traces are finalized early, the least
    /// recently active first, and their spans counted as evicted.
    pub max_pending_spans: usize,
}

impl GraphConfig {
    /// The first bucket start at or after `time_ns`: where a window starting at `time_ns`
    /// begins by the bucket rule (a window merges the buckets that start in it).
    pub fn bucket_start_at_or_after(&self, time_ns: i64) -> i64 {
        let bucket = i64::try_from(self.bucket.as_nanos())
            .unwrap_or(i64::MAX)
            .max(1);
        let start = time_ns.div_euclid(bucket) * bucket;
        if start == time_ns {
            start
        } else {
            start.saturating_add(bucket)
        }
    }
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            bucket: Duration::from_secs(10),
            horizon: Duration::from_secs(3600),
            pairing_ttl: Duration::from_secs(30),
            max_pending_spans: 500_000,
        }
    }
}

/// What the live graph has done so far; all totals except the `pending_*` and `buckets` gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GraphCounters {
    /// Spans accepted (duplicates and rejected rows excluded).
    pub spans_seen: u64,
    /// Rows that were not spans: bad ids, or a batch not in the storage schema.
    pub rows_rejected: u64,
    /// Spans seen again while the first copy was still pending (OTLP retries).
    pub duplicate_spans: u64,
    /// Calls added to edges, of every kind.
    pub edges_inferred: u64,
    /// Of those, calls to database and external nodes.
    pub virtual_edges: u64,
    /// Spans waiting in the pairing store now.
    pub pending_spans: u64,
    /// Traces with spans in the pairing store now.
    pub pending_traces: u64,
    /// Spans whose other half never came before their trace was finalized: CLIENTs without
    /// a SERVER (even when they became a virtual edge), SERVERs and CONSUMERs whose parent or
    /// linked producer never came, PRODUCERs without destination that nobody consumed.
    pub unpaired_expired: u64,
    /// Spans that gave no edge at all: unpaired CLIENTs with nothing to name a peer from,
    /// CONSUMERs with neither a destination nor a known producer.
    pub unplaced: u64,
    /// Spans finalized early because the pairing store was full.
    pub evicted: u64,
    /// Traces finalized (idle for the pairing TTL, or evicted).
    pub traces_finalized: u64,
    /// Statistics whose event time was older than the horizon already trimmed: dropped.
    pub late_events: u64,
    /// Statistics buckets in memory now.
    pub buckets: u64,
}

//! Incidents: a window's anomalous nodes and edges (health not ok) grouped by graph
//! connectivity, each with its likely cause, its impact, when it started and the cause's
//! figures before and after. `GET /api/incidents` and SQL `incidents(from, to)` answer it.
//!
//! ```text
//!  GraphView::judged (health of every element) ──> group(): union of the anomalous edges'
//!     ends, one group per connected part ──> likely cause: the most downstream anomalous
//!     element whose own calls are healthy, the one that explains most of its group
//!  ──> start: the cause's figures in steps going back, judged against the same baseline
//!  ──> before (baseline means) / after (since the start), impact, path to focus
//! ```
//!
//! The rule for the cause follows how a fault spreads in a call graph: a slow or failing
//! dependency makes every caller above it slow or failing too, so the anomalous element
//! lowest in the graph whose own dependencies are fine is where to look first. When one
//! caller sees it, the cause is that edge (the other callers of the target, if any, are
//! fine: it is that path, or the target under that caller's load); when several callers of
//! one node see it, the cause is the node.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Result;
use flowscope_graph::{EdgeKind, Element, HealthLevel, NodeKind, Snapshot};

use crate::error::QueryError;
use crate::graph::GraphView;
use crate::graph::health::{self, BaselineFigures, OwnHealth};
use crate::graph::tables::{graph_function, timestamp, window_arguments};
use crate::sql::SqlEngine;
use crate::sql::computed_table::ComputedTable;

/// The window incidents are judged over when none is given: recent enough to say what is
/// wrong now, long enough for a minute-long fault to move an element's p95.
pub const INCIDENT_WINDOW: Duration = Duration::from_secs(5 * 60);
/// At most this many incidents are answered, the highest ranked.
pub const MAX_INCIDENTS: usize = 50;
/// How far before the window the start of an incident is looked for.
const LOOKBACK: Duration = Duration::from_secs(30 * 60);
/// The steps the start is found in hold about this many of the cause's calls, so each step
/// is judged on enough traffic: a step under health's minimum for a p95
/// ([`health::min_calls_for`], 60) is unknown, since it could not show a slowdown.
const CALLS_PER_STEP: f64 = 80.0;
/// The longest and the most steps looked at.
const MAX_STEP: Duration = Duration::from_secs(5 * 60);
const MAX_STEPS: i64 = 240;
/// How long the live window's incidents are shared by readers (dashboards poll them).
const LIVE_REUSE: Duration = Duration::from_secs(5);
/// Nodes named in a summary's upstream list.
const SUMMARY_NAMES: usize = 5;

/// An element of the graph an incident names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Edge {
        source: String,
        target: String,
        kind: EdgeKind,
    },
    Node {
        id: String,
    },
}

impl Subject {
    /// `source -> target` for an edge, the id for a node: as `elements` lists them.
    pub fn name(&self) -> String {
        match self {
            Subject::Edge { source, target, .. } => format!("{source} -> {target}"),
            Subject::Node { id } => id.clone(),
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Subject::Edge { .. } => "edge",
            Subject::Node { .. } => "node",
        }
    }

    fn element(&self) -> Element {
        match self {
            Subject::Edge {
                source,
                target,
                kind,
            } => Element::Edge {
                source: source.clone(),
                target: target.clone(),
                kind: Some(*kind),
            },
            Subject::Node { id } => Element::Node { id: id.clone() },
        }
    }
}

/// The likely cause and why it was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub subject: Subject,
    pub level: HealthLevel,
    /// Its health reasons in the window.
    pub reasons: Vec<String>,
    /// Why it and not another element of the incident.
    pub evidence: Vec<String>,
    /// The kinds of its nodes: source and target for an edge, the node's for a node.
    pub kinds: Vec<NodeKind>,
}

/// A few figures of the cause: its baseline, or since the incident started.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    pub calls_per_second: f64,
    pub error_rate: f64,
    /// 0 when not measured (a node that sends no spans).
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// What the incident touches.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Impact {
    /// The cause's calls and failed calls per second since the incident started.
    pub calls_per_second: f64,
    pub errors_per_second: f64,
    /// Services above the cause along anomalous edges (the ones whose users feel it).
    pub upstream_services: Vec<String>,
    /// Anomalous elements in the incident.
    pub edges: usize,
    pub nodes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// 1 is the incident to look at first.
    pub rank: usize,
    /// The cause and the start: stable while the incident lasts.
    pub id: String,
    /// The worst level among its elements.
    pub level: HealthLevel,
    pub cause: Cause,
    pub started_ns: i64,
    /// Still anomalous at the end of the window; else `ended_ns` says when it stopped.
    pub ongoing: bool,
    pub ended_ns: Option<i64>,
    /// The cause's baseline (`None` without one) and its figures since the start.
    pub before: Option<Sample>,
    pub after: Sample,
    pub impact: Impact,
    /// Node ids from the entry of the incident down to the cause, to focus the graph on.
    pub path: Vec<String>,
    /// Every anomalous element of the incident, as [`Subject::name`] gives them: edges then
    /// nodes.
    pub elements: Vec<String>,
    pub summary: String,
}

/// One connected group of anomalous elements, before its timing is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub level: HealthLevel,
    pub cause: Cause,
    /// The cause's calls in the window.
    pub cause_calls: u64,
    pub path: Vec<String>,
    pub upstream_services: Vec<String>,
    pub edges: Vec<String>,
    pub nodes: Vec<String>,
}

/// A small union-find over node ids.
#[derive(Default)]
struct Groups {
    parent: HashMap<String, String>,
}

impl Groups {
    fn find(&mut self, id: &str) -> String {
        let mut root = id.to_string();
        while let Some(parent) = self.parent.get(&root)
            && *parent != root
        {
            root = parent.clone();
        }
        // Path compression keeps later finds short.
        let mut at = id.to_string();
        while let Some(parent) = self.parent.get(&at).cloned()
            && parent != root
        {
            self.parent.insert(at, root.clone());
            at = parent;
        }
        self.parent.entry(root.clone()).or_insert(root.clone());
        root
    }

    fn join(&mut self, a: &str, b: &str) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            // The smaller id is the root: groups come out the same on every run.
            let (root, child) = if a < b { (a, b) } else { (b, a) };
            self.parent.insert(child, root);
        }
    }
}

/// Groups the anomalous elements of a judged snapshot by connectivity and names each
/// group's likely cause. `own` holds the nodes' own verdicts (not the calls they make).
pub fn group(snapshot: &Snapshot, own: &OwnHealth) -> Vec<Draft> {
    let bad: Vec<usize> = (0..snapshot.edges.len())
        .filter(|&i| snapshot.edges[i].health.level != HealthLevel::Ok)
        .collect();
    let mut groups = Groups::default();
    for &i in &bad {
        let edge = &snapshot.edges[i];
        groups.join(&edge.source, &edge.target);
    }
    for id in own.keys() {
        groups.find(id);
    }
    let mut members: BTreeMap<String, (Vec<usize>, BTreeSet<String>)> = BTreeMap::new();
    for &i in &bad {
        let edge = &snapshot.edges[i];
        let root = groups.find(&edge.source);
        let entry = members.entry(root).or_default();
        entry.0.push(i);
        entry.1.insert(edge.source.clone());
        entry.1.insert(edge.target.clone());
    }
    for id in own.keys() {
        let root = groups.find(id);
        members.entry(root).or_default().1.insert(id.clone());
    }
    let index = Index::of(snapshot);
    members
        .into_values()
        .filter_map(|(edges, nodes)| draft(snapshot, own, &index, &edges, &nodes))
        .collect()
}

/// The snapshot's lookups every group needs, built once: a scan of 100,000 edges per group
/// made a graph with 1,000 failing edges take seconds.
struct Index<'a> {
    kinds: HashMap<&'a str, NodeKind>,
    calls_in: HashMap<&'a str, u64>,
    edges: HashMap<(&'a str, &'a str, EdgeKind), usize>,
    /// Edges out of a node, and into it.
    out_degree: HashMap<&'a str, usize>,
    in_degree: HashMap<&'a str, usize>,
}

impl<'a> Index<'a> {
    fn of(snapshot: &'a Snapshot) -> Self {
        let mut index = Index {
            kinds: HashMap::with_capacity(snapshot.nodes.len()),
            calls_in: HashMap::with_capacity(snapshot.nodes.len()),
            edges: HashMap::with_capacity(snapshot.edges.len()),
            out_degree: HashMap::new(),
            in_degree: HashMap::new(),
        };
        for node in &snapshot.nodes {
            index.kinds.insert(node.id.as_str(), node.kind);
            index
                .calls_in
                .entry(node.id.as_str())
                .or_insert(node.calls_in);
        }
        for (i, edge) in snapshot.edges.iter().enumerate() {
            index
                .edges
                .entry((edge.source.as_str(), edge.target.as_str(), edge.kind))
                .or_insert(i);
            *index.out_degree.entry(edge.source.as_str()).or_default() += 1;
            *index.in_degree.entry(edge.target.as_str()).or_default() += 1;
        }
        index
    }
}

fn draft(
    snapshot: &Snapshot,
    own: &OwnHealth,
    index: &Index,
    edges: &[usize],
    nodes: &BTreeSet<String>,
) -> Option<Draft> {
    let edge = |i: usize| &snapshot.edges[i];
    let mut into: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut calls_out: HashSet<&str> = HashSet::new();
    for &i in edges {
        into.entry(edge(i).target.as_str()).or_default().push(i);
        calls_out.insert(edge(i).source.as_str());
    }
    // Upstream of a node: every node that reaches it along the group's anomalous edges.
    let upstream_of = |start: &str| -> BTreeSet<String> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut stack = vec![start.to_string()];
        while let Some(at) = stack.pop() {
            for &i in into.get(at.as_str()).map_or(&[][..], Vec::as_slice) {
                let source = &edge(i).source;
                if source != start && seen.insert(source.clone()) {
                    stack.push(source.clone());
                }
            }
        }
        seen
    };
    let worst_into = |id: &str| -> Option<usize> {
        into.get(id)?
            .iter()
            .copied()
            .max_by_key(|&i| (edge(i).health.level, edge(i).calls))
    };

    // Candidates: anomalous nodes none of whose own calls are anomalous.
    let mut candidates: Vec<(Subject, usize)> = Vec::new();
    for id in nodes {
        if calls_out.contains(id.as_str()) {
            continue;
        }
        let callers: BTreeSet<&str> = into
            .get(id.as_str())
            .map(|list| list.iter().map(|&i| edge(i).source.as_str()).collect())
            .unwrap_or_default();
        let explained = upstream_of(id).len();
        let subject = match (callers.len(), worst_into(id)) {
            (1, Some(i)) => Subject::Edge {
                source: edge(i).source.clone(),
                target: edge(i).target.clone(),
                kind: edge(i).kind,
            },
            _ => Subject::Node { id: id.clone() },
        };
        candidates.push((subject, explained));
    }
    if candidates.is_empty() {
        // Every node of the group calls out on an anomalous edge: a loop. The worst edge.
        let i = edges
            .iter()
            .copied()
            .max_by_key(|&i| (edge(i).health.level, edge(i).calls))?;
        candidates.push((
            Subject::Edge {
                source: edge(i).source.clone(),
                target: edge(i).target.clone(),
                kind: edge(i).kind,
            },
            edges.len(),
        ));
    }
    let health_of = |subject: &Subject| -> (HealthLevel, Vec<String>, u64) {
        match subject {
            Subject::Edge {
                source,
                target,
                kind,
            } => index
                .edges
                .get(&(source.as_str(), target.as_str(), *kind))
                .map(|&i| edge(i))
                .map(|e| (e.health.level, e.health.reasons.clone(), e.calls))
                .unwrap_or_default(),
            Subject::Node { id } => {
                let calls = index.calls_in.get(id.as_str()).copied().unwrap_or(0);
                let (level, mut reasons) = own
                    .get(id)
                    .map(|h| (h.level, h.reasons.clone()))
                    .unwrap_or_default();
                // A node cause by its callers: their edges' verdicts are its reasons.
                for &i in into.get(id.as_str()).map_or(&[][..], Vec::as_slice) {
                    if let Some(first) = edge(i).health.reasons.first() {
                        reasons.push(format!("calls from {}: {first}", edge(i).source));
                    }
                }
                let level = into
                    .get(id.as_str())
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .map(|&i| edge(i).health.level)
                    .fold(level, HealthLevel::max);
                (level, reasons, calls)
            }
        }
    };
    // The cause explains the most of its group; then the worst; then the busiest.
    let (subject, explained) = candidates
        .into_iter()
        .map(|(subject, explained)| {
            let (level, _, calls) = health_of(&subject);
            (subject, explained, level, calls)
        })
        .max_by(|a, b| {
            (a.1, a.2, a.3)
                .cmp(&(b.1, b.2, b.3))
                .then_with(|| b.0.cmp(&a.0))
        })
        .map(|(subject, explained, _, _)| (subject, explained))?;
    let (level, reasons, cause_calls) = health_of(&subject);

    let (top, bottom) = match &subject {
        Subject::Edge { source, target, .. } => (source.clone(), Some(target.clone())),
        Subject::Node { id } => (id.clone(), None),
    };
    let deepest = bottom.clone().unwrap_or_else(|| top.clone());
    let mut evidence = Vec::new();
    let its_calls = index.out_degree.get(deepest.as_str()).copied().unwrap_or(0);
    if its_calls == 0 {
        evidence.push(format!("{deepest} makes no calls of its own"));
    } else {
        evidence.push(format!("{deepest}'s own calls ({its_calls}) are healthy"));
    }
    if let Some(mine) = own.get(&deepest)
        && let Some(first) = mine.reasons.first()
    {
        evidence.push(format!("{deepest} itself: {first}"));
    }
    if let Subject::Edge { target, .. } = &subject {
        // Edges into the target from other callers: all of them but the cause's own (of any
        // kind the cause's source uses to call it).
        let from_top = [EdgeKind::Sync, EdgeKind::Async]
            .into_iter()
            .filter(|k| {
                index
                    .edges
                    .contains_key(&(top.as_str(), target.as_str(), *k))
            })
            .count();
        let others = index
            .in_degree
            .get(target.as_str())
            .copied()
            .unwrap_or(0)
            .saturating_sub(from_top);
        if others > 0 {
            evidence.push(format!(
                "the {others} other caller(s) of {target} are healthy"
            ));
        }
    }
    let upstream = upstream_of(&deepest);
    if explained > 0 {
        evidence.push(format!(
            "{explained} node(s) above it along anomalous calls: the incident spreads from it"
        ));
    }

    // The path to focus: up from the cause along the busiest anomalous calls.
    let mut path: Vec<String> = bottom.into_iter().collect();
    path.insert(0, top.clone());
    let mut at = top.clone();
    while let Some(i) = into
        .get(at.as_str())
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .copied()
        .filter(|&i| !path.contains(&edge(i).source))
        .max_by_key(|&i| {
            (
                edge(i).health.level,
                edge(i).calls,
                std::cmp::Reverse(edge(i).source.clone()),
            )
        })
    {
        at = edge(i).source.clone();
        path.insert(0, at.clone());
    }

    let upstream_services: Vec<String> = upstream
        .into_iter()
        .filter(|id| index.kinds.get(id.as_str()) == Some(&NodeKind::Service))
        .collect();
    let level = edges
        .iter()
        .map(|&i| edge(i).health.level)
        .chain(nodes.iter().filter_map(|id| own.get(id).map(|h| h.level)))
        .fold(level, HealthLevel::max);
    let kind_of = |id: &str| index.kinds.get(id).copied().unwrap_or(NodeKind::Service);
    let cause_kinds = match &subject {
        Subject::Edge { source, target, .. } => vec![kind_of(source), kind_of(target)],
        Subject::Node { id } => vec![kind_of(id)],
    };
    let mut element_names: Vec<String> = edges
        .iter()
        .map(|&i| format!("{} -> {}", edge(i).source, edge(i).target))
        .collect();
    element_names.dedup();
    Some(Draft {
        level,
        cause: Cause {
            subject,
            level,
            reasons,
            evidence,
            kinds: cause_kinds,
        },
        cause_calls,
        path,
        upstream_services,
        edges: element_names,
        nodes: nodes.iter().cloned().collect(),
    })
}

/// Steps of whole buckets that hold about [`CALLS_PER_STEP`] calls at `calls_per_second`.
fn step_for(calls_per_second: f64, bucket_ns: i64) -> i64 {
    let bucket_s = bucket_ns as f64 / 1e9;
    let buckets = if calls_per_second > 0.0 {
        (CALLS_PER_STEP / (calls_per_second * bucket_s))
            .ceil()
            .max(1.0)
    } else {
        1.0
    };
    let max = (MAX_STEP.as_nanos() as i64 / bucket_ns).max(1) as f64;
    (buckets.min(max) as i64) * bucket_ns
}

/// The run of anomalous steps that reaches furthest toward the end, a gap of one quiet step
/// (too little traffic to judge: `None`) tolerated: `(first, last)` indices, or `None` when
/// no step was anomalous. A step judged ok ends the run: bridging it let a chance anomalous
/// step minutes before the incident move its start there.
fn last_run(verdicts: &[Option<bool>]) -> Option<(usize, usize)> {
    let anomalous = |i: usize| verdicts[i] == Some(true);
    let last = (0..verdicts.len()).rposition(anomalous)?;
    let mut first = last;
    let mut i = last;
    while i > 0 {
        if anomalous(i - 1) {
            first = i - 1;
            i -= 1;
        } else if i > 1 && verdicts[i - 1].is_none() && anomalous(i - 2) {
            first = i - 2;
            i -= 2;
        } else {
            break;
        }
    }
    Some((first, last))
}

/// The bucket at which the evidence changes from the baseline (`before`) to the anomalous
/// step (`during`): the start of the suffix of `buckets` whose summed evidence is greatest
/// (the CUSUM change-point estimate), or `None` when no suffix carries more evidence of the
/// anomaly than against it. Per bucket, with `calls` and `errors` the binomial log-likelihood
/// ratio of the anomalous error rate against the baseline's, when errors are what changed;
/// and ±1 for a median above (below) the baseline p95, when latency is: a bucket holds too
/// few calls to be judged, but together they place the change to a bucket.
fn change_point(
    starts: &[i64],
    buckets: &[Option<flowscope_graph::Figures>],
    before: &Sample,
    during: &flowscope_graph::Figures,
) -> Option<i64> {
    let p0 = before.error_rate.clamp(1e-3, 0.5);
    let p1 = (during.errors as f64 / during.calls.max(1) as f64).clamp(1e-3, 0.999);
    let errors_changed = during.calls > 0 && p1 > p0 + health::ERROR_RATE_MARGIN;
    let latency_changed =
        before.p95_ms > 0.0 && during.p95_ms > before.p95_ms * health::LATENCY_MARGIN;
    if !errors_changed && !latency_changed {
        return None;
    }
    let (error_weight, ok_weight) = ((p1 / p0).ln(), ((1.0 - p1) / (1.0 - p0)).ln());
    let evidence: Vec<f64> = buckets
        .iter()
        .map(|bucket| {
            let Some(f) = bucket.as_ref().filter(|f| f.calls > 0) else {
                return 0.0;
            };
            let mut score = 0.0;
            if errors_changed {
                score += f.errors as f64 * error_weight
                    + f.calls.saturating_sub(f.errors) as f64 * ok_weight;
            }
            if latency_changed && f.p50_ms > 0.0 {
                score += if f.p50_ms > before.p95_ms { 1.0 } else { -1.0 };
            }
            score
        })
        .collect();
    let mut best: Option<(f64, usize)> = None;
    let mut suffix = 0.0;
    for i in (0..evidence.len()).rev() {
        suffix += evidence[i];
        if suffix > 0.0 && best.is_none_or(|(score, _)| suffix >= score) {
            best = Some((suffix, i));
        }
    }
    best.and_then(|(_, i)| starts.get(i).copied())
}

fn health_figures(f: &flowscope_graph::Figures) -> health::Figures {
    health::Figures {
        calls: f.calls,
        errors: f.errors,
        p95_ms: f.p95_ms,
        p99_ms: f.p99_ms,
        // A series step does not carry calls per caller: the start is judged on errors and
        // latency.
        amplification: 0.0,
    }
}

/// The mean of the baseline sub-windows, as a sample.
fn baseline_sample(history: &[health::Figures], step_s: f64) -> Option<Sample> {
    if history.is_empty() {
        return None;
    }
    let n = history.len() as f64;
    let mean = |of: fn(&health::Figures) -> f64| history.iter().map(of).sum::<f64>() / n;
    let latency = |of: fn(&health::Figures) -> f64| {
        let values: Vec<f64> = history.iter().map(of).filter(|v| *v > 0.0).collect();
        if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        }
    };
    Some(Sample {
        calls_per_second: mean(|f| f.calls as f64) / step_s,
        error_rate: mean(|f| f.error_rate()),
        p95_ms: latency(|f| f.p95_ms),
        p99_ms: latency(|f| f.p99_ms),
    })
}

fn sample_of(f: &flowscope_graph::Figures, seconds: f64) -> Sample {
    Sample {
        calls_per_second: f.calls as f64 / seconds.max(1e-9),
        error_rate: if f.calls == 0 {
            0.0
        } else {
            f.errors as f64 / f.calls as f64
        },
        p95_ms: if f.has_latency { f.p95_ms } else { 0.0 },
        p99_ms: if f.has_latency { f.p99_ms } else { 0.0 },
    }
}

fn history_of(subject: &Subject, baseline: &[Arc<BaselineFigures>]) -> Vec<health::Figures> {
    baseline
        .iter()
        .filter_map(|b| match subject {
            Subject::Edge {
                source,
                target,
                kind,
            } => b.edge(source, target, *kind),
            Subject::Node { id } => b.node(id),
        })
        .collect()
}

/// `2026-12-05T13:02:10Z`.
pub fn time_text(ns: i64) -> String {
    arrow::temporal_conversions::timestamp_ns_to_datetime(ns)
        .map(|t| format!("{}Z", t.format("%Y-%m-%dT%H:%M:%S")))
        .unwrap_or_default()
}

fn summary(incident: &Incident) -> String {
    let cause = &incident.cause;
    let first = cause.reasons.first().map_or("", String::as_str);
    let mut text = format!(
        "likely cause: {} ({}{}{})",
        cause.subject.name(),
        cause.level.as_str(),
        if first.is_empty() { "" } else { ": " },
        first
    );
    let upstream = &incident.impact.upstream_services;
    if !upstream.is_empty() {
        let shown: Vec<&str> = upstream
            .iter()
            .take(SUMMARY_NAMES)
            .map(String::as_str)
            .collect();
        let more = if upstream.len() > SUMMARY_NAMES {
            format!(", and {} more", upstream.len() - SUMMARY_NAMES)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "; {} service(s) upstream affected: {}{more}",
            upstream.len(),
            shown.join(", ")
        ));
    }
    text.push_str(&format!(
        "; {:.1} calls/s through it",
        incident.impact.calls_per_second
    ));
    text.push_str(&format!("; since {}", time_text(incident.started_ns)));
    if let Some(ended) = incident.ended_ns {
        text.push_str(&format!(", ended {}", time_text(ended)));
    }
    text
}

/// The live window's incidents, when they were computed and the window they cover.
#[derive(Debug)]
pub(crate) struct LiveIncidents {
    at: std::time::Instant,
    from_ns: i64,
    to_ns: i64,
    incidents: Arc<Vec<Incident>>,
}

impl GraphView {
    /// The incidents of the last [`INCIDENT_WINDOW`] as of now, with the window: computed at
    /// most once per [`LIVE_REUSE`], however many readers ask (a reader that comes while they
    /// are computed waits for them rather than computing them again).
    pub fn live_incidents(
        &self,
        now_ns: i64,
    ) -> Result<(i64, i64, Arc<Vec<Incident>>), QueryError> {
        let mut last = match self.live_incidents.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(kept) = last.as_ref()
            && kept.at.elapsed() < LIVE_REUSE
        {
            return Ok((kept.from_ns, kept.to_ns, kept.incidents.clone()));
        }
        let (from_ns, to_ns) = (now_ns - INCIDENT_WINDOW.as_nanos() as i64, now_ns + 1);
        let incidents = Arc::new(self.incidents(from_ns, to_ns)?);
        *last = Some(LiveIncidents {
            at: std::time::Instant::now(),
            from_ns,
            to_ns,
            incidents: incidents.clone(),
        });
        Ok((from_ns, to_ns, incidents))
    }

    /// The incidents of `[from_ns, to_ns)`, ranked (worst level, then most services
    /// upstream affected, then most calls through the cause), at most [`MAX_INCIDENTS`].
    /// Reads the live graph and, for a window older than it, rebuilds: call it off the
    /// async runtime.
    pub fn incidents(&self, from_ns: i64, to_ns: i64) -> Result<Vec<Incident>, QueryError> {
        let judged = self.judged_in_detail(from_ns, to_ns)?;
        let mut drafts = group(&judged.snapshot, &judged.own);
        drafts.sort_by(|a, b| {
            (b.level, b.upstream_services.len(), b.cause_calls).cmp(&(
                a.level,
                a.upstream_services.len(),
                a.cause_calls,
            ))
        });
        drafts.truncate(MAX_INCIDENTS);
        let mut incidents = Vec::with_capacity(drafts.len());
        for draft in drafts {
            incidents.push(self.timed(draft, &judged.baseline, from_ns, to_ns)?);
        }
        // Timing can reorder ties; rank is the final order.
        incidents.sort_by(|a, b| {
            (b.level, b.impact.upstream_services.len())
                .cmp(&(a.level, a.impact.upstream_services.len()))
                .then(
                    b.impact
                        .calls_per_second
                        .total_cmp(&a.impact.calls_per_second),
                )
        });
        for (i, incident) in incidents.iter_mut().enumerate() {
            incident.rank = i + 1;
        }
        Ok(incidents)
    }

    /// When the draft's cause became anomalous, and its figures before and since.
    fn timed(
        &self,
        draft: Draft,
        baseline: &[Arc<BaselineFigures>],
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Incident, QueryError> {
        let subject = draft.cause.subject.clone();
        let element = subject.element();
        let bucket_ns = i64::try_from(self.bucket().as_nanos())
            .unwrap_or(i64::MAX)
            .max(1);
        let history = history_of(&subject, baseline);
        let baseline_step_s = crate::graph::view::BASELINE_STEP.as_secs_f64();
        let before = baseline_sample(&history, baseline_step_s);
        let window_s = (to_ns - from_ns) as f64 / 1e9;
        let rate = before
            .map(|b| b.calls_per_second)
            .filter(|r| *r > 0.0)
            .unwrap_or(draft.cause_calls as f64 / window_s.max(1e-9));
        let step = step_for(rate, bucket_ns);
        let earliest = (from_ns - LOOKBACK.as_nanos() as i64)
            .max(self.live_from_ns().min(from_ns))
            .max(to_ns - MAX_STEPS * step);
        let first_start = earliest.div_euclid(step) * step;
        let starts: Vec<i64> = (0..)
            .map(|i| first_start + i * step)
            .take_while(|start| *start < to_ns)
            .collect();
        let series = self.element_series(&element, &starts, step)?;
        let objective = match &subject {
            Subject::Edge { source, target, .. } => self.objectives().for_edge(source, target),
            Subject::Node { id } => self.objectives().for_service(id),
        };
        // Per step: anomalous or not, or unknown when it had too little traffic to judge (a
        // quiet step is no sign that the incident ended).
        let verdicts: Vec<Option<bool>> = series
            .iter()
            .map(|f| {
                f.as_ref()
                    .filter(|f| f.calls >= health::min_calls_for(0.95))
                    .map(|f| {
                        health::judge(health_figures(f), &history, objective).level
                            != HealthLevel::Ok
                    })
            })
            .collect();
        let (started_ns, ongoing, ended_ns) = match last_run(&verdicts) {
            Some((first, last)) => {
                // It ended when a later step was judged ok; the last step may be cut short
                // by the window.
                let whole = starts.len().saturating_sub(1);
                let judged_ok_after = (last + 1..whole).any(|i| verdicts[i] == Some(false));
                let ongoing = !judged_ok_after;
                let ended = (!ongoing).then(|| starts[last] + step);
                // A step holds enough calls to judge, so it can be minutes long: the start is
                // placed to a bucket inside the first anomalous step or the one before it.
                let started = match (&before, &series[first]) {
                    (Some(before), Some(during)) => {
                        let from = (starts[first] - step).max(first_start);
                        let bucket_starts: Vec<i64> = (0..)
                            .map(|i| from + i * bucket_ns)
                            .take_while(|at| *at < starts[first] + step)
                            .collect();
                        let buckets = self.element_series(&element, &bucket_starts, bucket_ns)?;
                        change_point(&bucket_starts, &buckets, before, during)
                            .unwrap_or(starts[first])
                    }
                    _ => starts[first],
                };
                (started, ongoing, ended)
            }
            // Too little traffic in each step to judge it: the window is all we know.
            None => (from_ns, true, None),
        };
        let until = ended_ns.unwrap_or(to_ns).min(to_ns);
        let since = self
            .element_series(&element, &[started_ns], (until - started_ns).max(1))?
            .into_iter()
            .next()
            .flatten()
            .unwrap_or_default();
        let after = sample_of(&since, (until - started_ns) as f64 / 1e9);
        let impact = Impact {
            calls_per_second: after.calls_per_second,
            errors_per_second: after.calls_per_second * after.error_rate,
            upstream_services: draft.upstream_services,
            edges: draft.edges.len(),
            nodes: draft.nodes.len(),
        };
        let mut elements = draft.edges;
        elements.extend(draft.nodes);
        let mut incident = Incident {
            rank: 0,
            id: format!(
                "{}@{}",
                subject.name(),
                started_ns.div_euclid(1_000_000_000)
            ),
            level: draft.level,
            cause: draft.cause,
            started_ns,
            ongoing,
            ended_ns,
            before,
            after,
            impact,
            path: draft.path,
            elements,
            summary: String::new(),
        };
        incident.summary = summary(&incident);
        Ok(incident)
    }
}

fn schema() -> SchemaRef {
    let list = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
        Field::new("rank", DataType::Int64, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("level", DataType::Utf8, false),
        Field::new("cause", DataType::Utf8, false),
        Field::new("cause_kind", DataType::Utf8, false),
        Field::new("cause_reason", DataType::Utf8, false),
        Field::new("started", timestamp(), false),
        Field::new("ongoing", DataType::Boolean, false),
        Field::new("calls_per_second", DataType::Float64, false),
        Field::new("errors_per_second", DataType::Float64, false),
        Field::new("upstream_services", list(), false),
        Field::new("elements", list(), false),
        Field::new("error_rate_before", DataType::Float64, true),
        Field::new("error_rate_after", DataType::Float64, false),
        Field::new("p95_ms_before", DataType::Float64, true),
        Field::new("p95_ms_after", DataType::Float64, false),
        Field::new("summary", DataType::Utf8, false),
        Field::new("window_start", timestamp(), false),
        Field::new("window_end", timestamp(), false),
    ]))
}

fn list_of<'a>(lists: impl Iterator<Item = &'a Vec<String>>) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new());
    for list in lists {
        for item in list {
            builder.values().append_value(item);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

fn batch(incidents: &[Incident], from_ns: i64, to_ns: i64) -> Result<RecordBatch> {
    let rows = incidents.len();
    let text = |f: fn(&Incident) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(incidents.iter().map(f)))
    };
    let float = |f: fn(&Incident) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(incidents.iter().map(f)))
    };
    let time = |values: Vec<i64>| -> ArrayRef {
        Arc::new(TimestampNanosecondArray::from(values).with_timezone("UTC"))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            incidents.iter().map(|i| i.rank as i64),
        )),
        text(|i| i.id.clone()),
        text(|i| i.level.as_str().to_string()),
        text(|i| i.cause.subject.name()),
        text(|i| i.cause.subject.kind_name().to_string()),
        text(|i| i.cause.reasons.join("; ")),
        time(incidents.iter().map(|i| i.started_ns).collect()),
        Arc::new(BooleanArray::from_iter(
            incidents.iter().map(|i| Some(i.ongoing)),
        )),
        float(|i| Some(i.impact.calls_per_second)),
        float(|i| Some(i.impact.errors_per_second)),
        list_of(incidents.iter().map(|i| &i.impact.upstream_services)),
        list_of(incidents.iter().map(|i| &i.elements)),
        float(|i| i.before.map(|b| b.error_rate)),
        float(|i| Some(i.after.error_rate)),
        float(|i| i.before.map(|b| b.p95_ms)),
        float(|i| Some(i.after.p95_ms)),
        text(|i| i.summary.clone()),
        time(vec![from_ns; rows]),
        time(vec![to_ns; rows]),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// `incidents(from, to)`: one row per incident of the window, by rank.
fn incidents_table(graph: &GraphView, from: i64, to: i64) -> Arc<ComputedTable> {
    let graph = graph.clone();
    ComputedTable::new(schema(), move || {
        // `incidents(now() - INTERVAL '5 minutes', now())`, as alert context asks it, is the
        // live answer every reader shares.
        let now = flowscope_base::clock::now_ns();
        let live =
            to - from == INCIDENT_WINDOW.as_nanos() as i64 && (now - to).abs() < 2_000_000_000;
        let incidents = if live {
            graph.live_incidents(now).map(|(_, _, found)| found)?
        } else {
            graph.incidents(from, to).map(Arc::new)?
        };
        batch(&incidents, from, to).map_err(|e| QueryError::Internal(e.to_string()))
    })
}

/// Registers `incidents(from, to)`.
pub fn register(engine: &SqlEngine, graph: &GraphView) {
    let function = graph_function(graph, |graph, args| {
        let (from, to) = window_arguments(args, "incidents takes two timestamps")?;
        Ok(incidents_table(graph, from, to))
    });
    engine.register_table_function("incidents", function);
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_graph::{Edge, Health, Node};

    fn node(id: &str, kind: NodeKind) -> Node {
        Node {
            id: id.into(),
            kind,
            calls_in: 100,
            errors_in: 0,
            p50_ms: 1.0,
            p95_ms: 2.0,
            p99_ms: 3.0,
            health: Health::default(),
            attributes: Default::default(),
            group: None,
        }
    }

    fn level(text: &str) -> HealthLevel {
        match text {
            "ok" => HealthLevel::Ok,
            "degraded" => HealthLevel::Degraded,
            _ => HealthLevel::Failing,
        }
    }

    /// A snapshot from `"a -> b: degraded"` lines (`ok` edges too); every node a service
    /// unless it is named in `others`.
    fn snapshot(lines: &[&str], others: &[(&str, NodeKind)]) -> Snapshot {
        let mut ids: BTreeSet<String> = BTreeSet::new();
        let mut edges = Vec::new();
        for line in lines {
            let (pair, verdict) = line.split_once(": ").unwrap();
            let (source, target) = pair.split_once(" -> ").unwrap();
            ids.insert(source.into());
            ids.insert(target.into());
            let level = level(verdict);
            edges.push(Edge {
                source: source.into(),
                target: target.into(),
                kind: EdgeKind::Sync,
                calls: 100,
                errors: 0,
                p50_ms: 1.0,
                p95_ms: 2.0,
                p99_ms: 3.0,
                bytes: 0,
                amplification: 1.0,
                amplified: false,
                trace_loops: 0,
                health: Health {
                    level,
                    reasons: if level == HealthLevel::Ok {
                        vec![]
                    } else {
                        vec![format!("{verdict} because")]
                    },
                },
            });
        }
        let nodes = ids
            .iter()
            .map(|id| {
                let kind = others
                    .iter()
                    .find(|(o, _)| o == id)
                    .map_or(NodeKind::Service, |(_, k)| *k);
                node(id, kind)
            })
            .collect();
        Snapshot {
            from_ns: 0,
            to_ns: 1,
            nodes,
            edges,
            loops: vec![],
        }
    }

    /// Each draft as `cause | path | upstream services`.
    fn check(lines: &[&str], own: &[&str], others: &[(&str, NodeKind)], expected: &[&str]) {
        let snapshot = snapshot(lines, others);
        let own: OwnHealth = own
            .iter()
            .map(|id| {
                (
                    id.to_string(),
                    Health {
                        level: HealthLevel::Degraded,
                        reasons: vec!["p95 high".into()],
                    },
                )
            })
            .collect();
        let got: Vec<String> = group(&snapshot, &own)
            .iter()
            .map(|d| {
                format!(
                    "{} | {} | {}",
                    d.cause.subject.name(),
                    d.path.join(" "),
                    d.upstream_services.join(" ")
                )
            })
            .collect();
        assert_eq!(got, expected, "{lines:?}");
    }

    #[test]
    fn the_cause_is_the_lowest_anomalous_element_with_healthy_calls() {
        // A slow database call spreads up two levels; the steady side branch stays out.
        check(
            &[
                "gateway -> rides: degraded",
                "rides -> dispatch: degraded",
                "dispatch -> drivers: degraded",
                "drivers -> vehicles-db: ok",
                "gateway -> users: ok",
            ],
            &["gateway", "rides", "dispatch"],
            &[("vehicles-db", NodeKind::Database)],
            &["dispatch -> drivers | gateway rides dispatch drivers | dispatch gateway rides"],
        );
        // An external API that fails: the edge into it, even though nothing is above it.
        check(
            &["payments -> card-processor: failing"],
            &[],
            &[("card-processor", NodeKind::External)],
            &["payments -> card-processor | payments card-processor | payments"],
        );
    }

    #[test]
    fn a_node_every_caller_sees_is_the_cause() {
        check(
            &["a -> db: degraded", "b -> db: failing", "c -> db: ok"],
            &[],
            &[("db", NodeKind::Database)],
            &["db | b db | a b"],
        );
    }

    #[test]
    fn unconnected_anomalies_are_separate_incidents() {
        check(
            &["a -> b: degraded", "c -> d: failing", "b -> c: ok"],
            &[],
            &[],
            &["a -> b | a b | a", "c -> d | c d | c"],
        );
        // A service slow on its own, calling nobody anomalous: an incident of one node.
        check(&["a -> b: ok"], &["b"], &[], &["b | b | "]);
    }

    #[test]
    fn a_loop_of_anomalous_calls_still_names_a_cause() {
        check(
            &["a -> b: degraded", "b -> a: failing"],
            &[],
            &[],
            &["b -> a | b a | b"],
        );
    }

    #[test]
    fn the_start_is_the_last_run_of_anomalous_steps() {
        let (yes, ok, quiet) = (Some(true), Some(false), None);
        assert_eq!(last_run(&[ok, ok]), None);
        assert_eq!(last_run(&[ok, yes, yes, ok]), Some((1, 2)));
        // One quiet step inside a run does not split it; two do, and so does one judged ok.
        assert_eq!(last_run(&[yes, quiet, yes, yes]), Some((0, 3)));
        assert_eq!(last_run(&[yes, quiet, quiet, yes]), Some((3, 3)));
        assert_eq!(last_run(&[yes, ok, yes, yes]), Some((2, 3)));
    }

    #[test]
    fn the_start_is_placed_to_the_bucket_where_the_evidence_changes() {
        let before = Sample {
            calls_per_second: 0.5,
            error_rate: 0.01,
            p95_ms: 220.0,
            p99_ms: 280.0,
        };
        let bucket = |calls: u64, errors: u64, p50_ms: f64| {
            Some(flowscope_graph::Figures {
                calls,
                errors,
                p50_ms,
                p95_ms: p50_ms * 2.0,
                p99_ms: p50_ms * 3.0,
                has_latency: true,
            })
        };
        let starts: Vec<i64> = (0..20).map(|i| i * 10).collect();
        // Errors: 1 in 100 for 12 buckets (one stray error among them), then 2 in 5.
        let mut errors: Vec<_> = (0..12).map(|_| bucket(5, 0, 100.0)).collect();
        errors[3] = bucket(5, 1, 100.0);
        errors[5] = None;
        errors.extend((12..20).map(|i| bucket(5, if i == 15 { 0 } else { 2 }, 100.0)));
        let during = bucket(40, 14, 100.0).expect("figures");
        assert_eq!(change_point(&starts, &errors, &before, &during), Some(120));
        // Latency: medians four times the usual from bucket 7 on, with one fast call in it.
        let mut slow: Vec<_> = (0..7).map(|_| bucket(5, 0, 100.0)).collect();
        slow.extend((7..20).map(|i| bucket(5, 0, if i == 9 { 150.0 } else { 400.0 })));
        let during = bucket(65, 0, 400.0).expect("figures");
        assert_eq!(change_point(&starts, &slow, &before, &during), Some(70));
        // Nothing changed: no start to place.
        let calm: Vec<_> = (0..20).map(|_| bucket(5, 0, 100.0)).collect();
        let during = bucket(100, 1, 100.0).expect("figures");
        assert_eq!(change_point(&starts, &calm, &before, &during), None);
    }

    #[test]
    fn steps_hold_enough_calls_to_judge() {
        let bucket = 10_000_000_000;
        // 1 call/s: 80 s → eight 10 s buckets; 100 calls/s: one bucket; none: one bucket.
        assert_eq!(step_for(1.0, bucket), 8 * bucket);
        assert_eq!(step_for(100.0, bucket), bucket);
        assert_eq!(step_for(0.0, bucket), bucket);
        // A trickle: at most five minutes.
        assert_eq!(step_for(0.001, bucket), 30 * bucket);
    }
}

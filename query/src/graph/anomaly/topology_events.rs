//! `topology_events([from [, to [, step]]])`: how the graph's shape changed from one step to
//! the next: edges and nodes that appeared or vanished, loops that formed or broke, and
//! edges whose amplification (calls per calling span) jumped beyond the control limits of
//! their own earlier steps.
//!
//! An amplification jump is judged as `health.rs` judges a window: against mean + 3σ of the
//! edge's amplification in the earlier steps that were within their limits (at least
//! [`AMPLIFICATION_MARGIN`] × mean and mean + [`AMPLIFICATION_FLOOR`], so jitter does not
//! flag), for steps with at least [`MIN_STEP_CALLS`] calls. With fewer than
//! `spc::MIN_BASELINE_POINTS` such steps there is no σ to judge by, and a step at least
//! [`AMPLIFICATION_JUMP`] times the step before is a jump. A jump is reported at the step that
//! crosses the limit, once while it stays beyond, and the steps beyond stay out of the baseline.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableFunctionImpl;
use datafusion::common::{Result, plan_err};
use flowscope_graph::{Edge, Snapshot};

use super::args;
use super::series::{optional_floats, snapshots, texts, timestamps};
use super::spc::{self, RunningBaseline};
use crate::error::QueryError;
use crate::graph::GraphView;
use crate::graph::health;
use crate::graph::tables::{graph_function, timestamp};
use crate::sql::computed_table::ComputedTable;

/// Without a baseline, an amplification at least this many times the step before's is a jump.
pub const AMPLIFICATION_JUMP: f64 = 2.0;
/// The limit is at least this many times the earlier steps' mean amplification...
pub const AMPLIFICATION_MARGIN: f64 = health::AMPLIFICATION_MARGIN;
/// ...and at least this many calls per caller above it.
pub const AMPLIFICATION_FLOOR: f64 = health::AMPLIFICATION_FLOOR;
/// A step with fewer calls on the edge says too little about its calls per caller.
pub const MIN_STEP_CALLS: u64 = health::MIN_BASELINE_CALLS;
const DEFAULT_WINDOW_NS: i64 = 3_600_000_000_000;
const DEFAULT_STEP: &str = "1m";

/// One change between two consecutive steps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub event: &'static str,
    /// The node id, `"source -> target"`, or the loop id.
    pub subject: String,
    /// The node's or edge's kind; none for loops.
    pub kind: Option<&'static str>,
    pub source: Option<String>,
    pub target: Option<String>,
    /// Calls (amplification for a jump) in the step before and in this one.
    pub before: Option<f64>,
    pub after: Option<f64>,
}

/// What changed from each step to the next: `(index of the later step, event)`, by step, then
/// event, then subject.
pub(crate) fn events<S: Borrow<Snapshot>>(steps: &[S]) -> Vec<(usize, Event)> {
    let mut amplification = AmplificationHistory::default();
    let Some(first) = steps.first() else {
        return Vec::new();
    };
    amplification.record(first.borrow());
    steps
        .windows(2)
        .enumerate()
        .flat_map(|(i, pair)| {
            step_events(pair[0].borrow(), pair[1].borrow(), &mut amplification)
                .into_iter()
                .map(move |e| (i + 1, e))
        })
        .collect()
}

/// Each edge's amplification over the steps so far.
#[derive(Debug, Default)]
struct AmplificationHistory {
    edges: HashMap<EdgeName, EdgeAmplification>,
}

#[derive(Debug, Default)]
struct EdgeAmplification {
    /// The steps that were within the limits (and had the traffic to say).
    within: RunningBaseline,
    /// The last step judged was beyond them.
    beyond: bool,
}

impl AmplificationHistory {
    /// The first step: nothing to compare with, only a baseline to start.
    fn record(&mut self, snapshot: &Snapshot) {
        for (key, edge) in edges_of(snapshot) {
            self.judge(key, None, edge);
        }
    }

    /// Whether `edge` crossed its limit in this step (`before`: the same edge in the step
    /// before, if it was there); then adds the step to the edge's history.
    fn judge(&mut self, key: EdgeName, before: Option<&Edge>, edge: &Edge) -> bool {
        let history = self.edges.entry(key).or_default();
        let value = edge.amplification;
        if edge.calls < MIN_STEP_CALLS || value <= 0.0 {
            return false;
        }
        let beyond = match history.within.baseline() {
            Some(base) => value > amplification_limit(base),
            None => before.is_some_and(|b| {
                b.calls >= MIN_STEP_CALLS
                    && b.amplification > 0.0
                    && value >= AMPLIFICATION_JUMP * b.amplification
            }),
        };
        let crossed = beyond && !history.beyond && before.is_some();
        history.beyond = beyond;
        if !beyond {
            history.within.push(value);
        }
        crossed
    }
}

/// mean + 3σ, at least the margins above the mean.
fn amplification_limit(base: spc::Baseline) -> f64 {
    (base.mean + health::K * base.sigma)
        .max(base.mean * AMPLIFICATION_MARGIN)
        .max(base.mean + AMPLIFICATION_FLOOR)
}

/// What changed from `before` to `after`, by event then subject.
fn step_events(
    before: &Snapshot,
    after: &Snapshot,
    amplification: &mut AmplificationHistory,
) -> Vec<Event> {
    let mut found = Vec::new();
    let nodes = |s: &Snapshot| -> BTreeMap<String, (&'static str, f64)> {
        s.nodes
            .iter()
            .map(|n| (n.id.clone(), (n.kind.as_str(), n.calls_in as f64)))
            .collect()
    };
    let (was, is) = (nodes(before), nodes(after));
    for (id, (kind, calls)) in &is {
        if !was.contains_key(id) {
            found.push(node_event("node_appeared", id, kind, None, Some(*calls)));
        }
    }
    for (id, (kind, calls)) in &was {
        if !is.contains_key(id) {
            found.push(node_event("node_vanished", id, kind, Some(*calls), None));
        }
    }
    let (was, is) = (edges_of(before), edges_of(after));
    let edge_event = |event, key: &EdgeName, b, a| Event {
        event,
        subject: format!("{} -> {}", key.0, key.1),
        kind: Some(key.2),
        source: Some(key.0.clone()),
        target: Some(key.1.clone()),
        before: b,
        after: a,
    };
    for (key, edge) in &is {
        let earlier = was.get(key).copied();
        let jumped = amplification.judge(key.clone(), earlier, edge);
        match earlier {
            None => found.push(edge_event(
                "edge_appeared",
                key,
                None,
                Some(edge.calls as f64),
            )),
            Some(earlier) if jumped => found.push(edge_event(
                "amplification_jump",
                key,
                Some(earlier.amplification),
                Some(edge.amplification),
            )),
            Some(_) => {}
        }
    }
    for (key, edge) in &was {
        if !is.contains_key(key) {
            found.push(edge_event(
                "edge_vanished",
                key,
                Some(edge.calls as f64),
                None,
            ));
        }
    }
    let loops = |s: &Snapshot| {
        s.loops
            .iter()
            .map(|l| (l.id.clone(), l.calls as f64))
            .collect::<BTreeMap<_, _>>()
    };
    let (was, is) = (loops(before), loops(after));
    let loop_event = |event, id: &std::sync::Arc<str>, b, a| Event {
        event,
        subject: id.to_string(),
        kind: None,
        source: None,
        target: None,
        before: b,
        after: a,
    };
    for (id, calls) in &is {
        if !was.contains_key(id) {
            found.push(loop_event("loop_formed", id, None, Some(*calls)));
        }
    }
    for (id, calls) in &was {
        if !is.contains_key(id) {
            found.push(loop_event("loop_broken", id, Some(*calls), None));
        }
    }
    found.sort_by(|a, b| (a.event, &a.subject, a.kind).cmp(&(b.event, &b.subject, b.kind)));
    found
}

type EdgeName = (String, String, &'static str);

fn edges_of(snapshot: &Snapshot) -> BTreeMap<EdgeName, &Edge> {
    snapshot
        .edges
        .iter()
        .map(|e| ((e.source.clone(), e.target.clone(), e.kind.as_str()), e))
        .collect()
}

fn node_event(
    event: &'static str,
    id: &str,
    kind: &'static str,
    before: Option<f64>,
    after: Option<f64>,
) -> Event {
    Event {
        event,
        subject: id.to_string(),
        kind: Some(kind),
        source: None,
        target: None,
        before,
        after,
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("at", timestamp(), false),
        Field::new("event", DataType::Utf8, false),
        Field::new("subject", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, true),
        Field::new("target", DataType::Utf8, true),
        Field::new("before", DataType::Float64, true),
        Field::new("after", DataType::Float64, true),
    ]))
}

fn batch(rows: &[(i64, Event)]) -> Result<RecordBatch> {
    let optional = |pick: fn(&Event) -> Option<&str>| -> ArrayRef {
        Arc::new(StringArray::from_iter(rows.iter().map(|r| pick(&r.1))))
    };
    let columns = vec![
        timestamps(rows.iter().map(|r| r.0)),
        texts(rows.iter().map(|r| r.1.event)),
        texts(rows.iter().map(|r| r.1.subject.as_str())),
        optional(|e| e.kind),
        optional(|e| e.source.as_deref()),
        optional(|e| e.target.as_deref()),
        optional_floats(rows.iter().map(|r| r.1.before)),
        optional_floats(rows.iter().map(|r| r.1.after)),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

pub(crate) fn function(graph: &GraphView) -> Arc<dyn TableFunctionImpl> {
    graph_function(graph, move |graph, exprs| {
        if exprs.len() > 3 {
            return plan_err!(
                "write ([from [, to [, step]]]), e.g. () or (now() - INTERVAL '6 hours', now(), '5m')"
            );
        }
        let step = match exprs.get(2) {
            Some(expr) => args::series_bucket(expr, graph.bucket())?,
            None => {
                args::series_bucket(&datafusion::logical_expr::lit(DEFAULT_STEP), graph.bucket())?
            }
        };
        let to = match exprs.get(1) {
            Some(expr) => args::timestamp(expr, "to")?,
            None => args::settled_now_ns(),
        };
        let from = match exprs.first() {
            Some(expr) => args::timestamp(expr, "from")?,
            None => to - DEFAULT_WINDOW_NS,
        };
        args::check_window(from, to)?;
        let starts = args::bucket_starts(from, to, step)?;
        let graph = graph.clone();
        Ok(ComputedTable::new(schema(), move || {
            let windows = snapshots(&graph, &starts, step)?;
            let rows: Vec<(i64, Event)> = events(&windows)
                .into_iter()
                .filter_map(|(i, e)| Some((*starts.get(i)?, e)))
                .collect();
            batch(&rows).map_err(|e| QueryError::Internal(e.to_string()))
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_graph::{EdgeKind, FeedbackLoop, Node, NodeKind};

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            kind: NodeKind::Service,
            calls_in: 10,
            errors_in: 0,
            p50_ms: 1.0,
            p95_ms: 1.0,
            p99_ms: 1.0,
            health: Default::default(),
            attributes: Default::default(),
            group: None,
        }
    }

    fn edge(source: &str, target: &str, amplification: f64) -> Edge {
        Edge {
            source: source.into(),
            target: target.into(),
            kind: EdgeKind::Sync,
            calls: 10,
            errors: 0,
            p50_ms: 1.0,
            p95_ms: 1.0,
            p99_ms: 1.0,
            bytes: 0,
            amplification,
            amplified: false,
            trace_loops: 0,
            health: Default::default(),
        }
    }

    fn graph(nodes: &[&str], edges: Vec<Edge>, loops: &[&str]) -> Snapshot {
        Snapshot {
            from_ns: 0,
            to_ns: 1,
            nodes: nodes.iter().map(|n| node(n)).collect(),
            edges,
            loops: loops
                .iter()
                .map(|id| FeedbackLoop {
                    id: (*id).into(),
                    nodes: Vec::new().into(),
                    edges: Vec::new().into(),
                    calls: 4,
                    trace_loops: 0,
                })
                .collect(),
        }
    }

    fn named(events: &[Event]) -> Vec<(&str, &str)> {
        events
            .iter()
            .map(|e| (e.event, e.subject.as_str()))
            .collect()
    }

    /// The events between two steps.
    fn between(before: &Snapshot, after: &Snapshot) -> Vec<Event> {
        events(&[before, after])
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// The steps (from 1) at which a -> b's amplification jumped, over a series of steps.
    fn check_jumps(amplifications: &[f64], expected: &[usize]) {
        let steps: Vec<Snapshot> = amplifications
            .iter()
            .map(|a| graph(&["a", "b"], vec![edge("a", "b", *a)], &[]))
            .collect();
        let jumps: Vec<usize> = events(&steps)
            .into_iter()
            .filter(|(_, e)| e.event == "amplification_jump")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(jumps, expected, "{amplifications:?}");
    }

    #[test]
    fn each_kind_of_change_once() {
        let before = graph(
            &["a", "b", "old"],
            vec![
                edge("a", "b", 1.0),
                edge("a", "old", 1.5),
                edge("b", "c", 0.0),
            ],
            &[],
        );
        // a -> b goes from 1 to 2 calls per caller (a jump), b -> c from unknown to 5 (not a
        // jump: nothing to compare), "old" and a -> old vanish, b -> a and its loop appear.
        let after = graph(
            &["a", "b"],
            vec![
                edge("a", "b", 2.0),
                edge("b", "a", 1.0),
                edge("b", "c", 5.0),
            ],
            &["a -> b"],
        );
        assert_eq!(
            named(&between(&before, &after)),
            [
                ("amplification_jump", "a -> b"),
                ("edge_appeared", "b -> a"),
                ("edge_vanished", "a -> old"),
                ("loop_formed", "a -> b"),
                ("node_vanished", "old"),
            ]
        );
        let jump = &between(&before, &after)[0];
        assert_eq!((jump.before, jump.after), (Some(1.0), Some(2.0)));
        // And back: the reverse changes, but no jump down.
        assert_eq!(
            named(&between(&after, &before)),
            [
                ("edge_appeared", "a -> old"),
                ("edge_vanished", "b -> a"),
                ("loop_broken", "a -> b"),
                ("node_appeared", "old"),
            ]
        );
    }

    #[test]
    fn a_rise_short_of_double_is_no_jump() {
        let before = graph(&["a", "b"], vec![edge("a", "b", 1.0)], &[]);
        let after = graph(&["a", "b"], vec![edge("a", "b", 1.99)], &[]);
        assert!(between(&before, &after).is_empty());
        assert!(between(&before, &before).is_empty());
    }

    /// The city's payments -> card-processor: about 1.1 calls per caller, jittering.
    const STEADY: [f64; 12] = [
        1.10, 1.08, 1.13, 1.05, 1.12, 1.09, 1.15, 1.07, 1.11, 1.10, 1.14, 1.06,
    ];

    #[test]
    fn a_retry_storm_jumps_beyond_the_edges_own_limits() {
        // Retries during an incident: ×1.1 to ×1.6 is far short of a doubling, and a jump.
        let mut storm = STEADY.to_vec();
        storm.extend([1.6, 1.7, 1.65, 1.1, 1.08, 1.62]);
        // Reported where it crosses (step 12), once while it lasts, and again after it
        // came back within its limits (step 17).
        check_jumps(&storm, &[12, 17]);
        let jump = events(
            &storm
                .iter()
                .map(|a| graph(&["a", "b"], vec![edge("a", "b", *a)], &[]))
                .collect::<Vec<_>>(),
        );
        let (_, first) = &jump[0];
        assert_eq!((first.before, first.after), (Some(1.06), Some(1.6)));
    }

    #[test]
    fn steady_jitter_is_no_jump() {
        check_jumps(&STEADY, &[]);
        // Jitter up to the margin (×1.2 of the mean, 0.2 above it) after a steady baseline.
        let mut jitter = STEADY.to_vec();
        jitter.extend([1.25, 1.18, 1.28, 1.1]);
        check_jumps(&jitter, &[]);
        // A noisy fan-out of about five keeps its noise.
        check_jumps(&[4.0, 6.0, 5.0, 4.5, 5.5, 6.0, 4.0, 6.5, 5.0], &[]);
        // A quiet edge (under ten calls a step) says nothing either way.
        let quiet: Vec<Snapshot> = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0]
            .iter()
            .map(|a| {
                let mut e = edge("a", "b", *a);
                e.calls = 9;
                graph(&["a", "b"], vec![e], &[])
            })
            .collect();
        assert!(events(&quiet).is_empty());
    }
}

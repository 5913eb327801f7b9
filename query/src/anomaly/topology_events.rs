//! `topology_events([from [, to [, step]]])`: how the graph's shape changed from one step to
//! the next: edges and nodes that appeared or vanished, loops that formed or broke, and
//! edges whose amplification (calls per calling span) at least doubled.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};
use flowscope_graph::{Edge, Snapshot};

use super::args;
use super::series::{optional_floats, snapshots, texts, timestamps};
use super::table::ComputedTable;
use crate::error::QueryError;
use crate::graph_tables::{GraphView, timestamp};

/// An amplification at least this many times the step before's is a jump.
pub const AMPLIFICATION_JUMP: f64 = 2.0;
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

/// What changed from `before` to `after`, by event then subject.
pub(crate) fn events(before: &Snapshot, after: &Snapshot) -> Vec<Event> {
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
        match was.get(key) {
            None => found.push(edge_event(
                "edge_appeared",
                key,
                None,
                Some(edge.calls as f64),
            )),
            Some(earlier)
                if earlier.amplification > 0.0
                    && edge.amplification >= AMPLIFICATION_JUMP * earlier.amplification =>
            {
                found.push(edge_event(
                    "amplification_jump",
                    key,
                    Some(earlier.amplification),
                    Some(edge.amplification),
                ))
            }
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
    let loop_event = |event, id: &String, b, a| Event {
        event,
        subject: id.clone(),
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

#[derive(Debug)]
struct TopologyEventsFunction {
    graph: GraphView,
}

pub(crate) fn function(graph: &GraphView) -> Arc<dyn TableFunctionImpl> {
    Arc::new(TopologyEventsFunction {
        graph: graph.clone(),
    })
}

impl TableFunctionImpl for TopologyEventsFunction {
    fn call_with_args(&self, call: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = call.exprs();
        if exprs.len() > 3 {
            return plan_err!(
                "write ([from [, to [, step]]]), e.g. () or (now() - INTERVAL '6 hours', now(), '5m')"
            );
        }
        let step = match exprs.get(2) {
            Some(expr) => args::series_bucket(expr, self.graph.bucket())?,
            None => args::series_bucket(
                &datafusion::logical_expr::lit(DEFAULT_STEP),
                self.graph.bucket(),
            )?,
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
        let graph = self.graph.clone();
        Ok(ComputedTable::new(schema(), move || {
            let windows = snapshots(&graph, &starts, step)?;
            let rows: Vec<(i64, Event)> = windows
                .windows(2)
                .zip(starts.iter().skip(1))
                .flat_map(|(pair, at)| events(&pair[0], &pair[1]).into_iter().map(|e| (*at, e)))
                .collect();
            batch(&rows).map_err(|e| QueryError::Internal(e.to_string()))
        }))
    }
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
                    id: id.to_string(),
                    nodes: vec![],
                    edges: vec![],
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
            named(&events(&before, &after)),
            [
                ("amplification_jump", "a -> b"),
                ("edge_appeared", "b -> a"),
                ("edge_vanished", "a -> old"),
                ("loop_formed", "a -> b"),
                ("node_vanished", "old"),
            ]
        );
        let jump = &events(&before, &after)[0];
        assert_eq!((jump.before, jump.after), (Some(1.0), Some(2.0)));
        // And back: the reverse changes, but no jump down.
        assert_eq!(
            named(&events(&after, &before)),
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
        assert!(events(&before, &after).is_empty());
        assert!(events(&before, &before).is_empty());
    }
}

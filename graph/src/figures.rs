//! One node's or one edge's figures in each of a row of windows, read straight from their
//! buckets: what a panel's sparklines draw, without merging, naming and searching for loops in
//! the whole graph of every step as [`Window::into_snapshot`] would.

use std::sync::Arc;

use crate::live::Window;
use crate::sketch::LatencySketch;
use crate::types::{EdgeKind, NodeKind};
use crate::window::{Bucket, EdgeKey, NodeKey};

const KINDS: [NodeKind; 4] = [
    NodeKind::Service,
    NodeKind::Database,
    NodeKind::Queue,
    NodeKind::External,
];

/// An edge or a node, by the ids a [`crate::Snapshot`] gives its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    /// The calls from `source` to `target`; of one kind, or of both when `kind` is `None`.
    Edge {
        source: String,
        target: String,
        kind: Option<EdgeKind>,
    },
    Node {
        id: String,
    },
}

/// What one window says of an element: the figures its snapshot row would have (zero when
/// the element is not in the window).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// An edge's calls; a node's calls in (its own SERVER and CONSUMER spans for a service,
    /// the calls of its incoming edges for other kinds).
    pub calls: u64,
    pub errors: u64,
    /// Latency quantiles; 0 when unmeasured: no calls, or a node that is not a service.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// The element's latency is measured at all: an edge, or a service (other nodes send no
    /// spans of their own).
    pub has_latency: bool,
}

/// The element's figures in each window, `None` for a window whose graph is empty (nothing
/// was running, or its spans are gone: no data, rather than zero calls).
///
/// The element's ids are resolved once, against every window together, as the graph of the
/// whole span of them names its nodes: a queue shown as `queue:orders` (because a service
/// `orders` exists) stays that queue in a step where the service sent nothing. Where no such
/// name is shared, each window's figures are exactly its snapshot's row.
pub fn element_series(windows: &[Window], element: &Element) -> Vec<Option<Figures>> {
    let buckets = || windows.iter().flat_map(|w| w.buckets.iter());
    let ids: Vec<&str> = match element {
        Element::Edge { source, target, .. } => vec![source, target],
        Element::Node { id } => vec![id],
    };
    let mut candidates = Candidates::new(&ids);
    for bucket in buckets() {
        candidates.mark_present(bucket);
    }
    let resolved: Vec<Vec<NodeKey>> = ids.iter().map(|id| candidates.keys_named(id)).collect();
    windows
        .iter()
        .map(|window| {
            let live = window.buckets.iter().filter(|b| !is_empty(b));
            let mut live = live.peekable();
            live.peek()?;
            Some(match element {
                Element::Edge { kind, .. } => edge_figures(live, &resolved[0], &resolved[1], *kind),
                Element::Node { .. } => node_figures(live, &resolved[0]),
            })
        })
        .collect()
}

fn is_empty(bucket: &Bucket) -> bool {
    bucket.edges.is_empty() && bucket.services.is_empty() && bucket.trace_loops.is_empty()
}

/// Every node that may be shown under one of the ids: for `queue:orders`, the queue
/// `orders` (shown so when another node is named `orders`) and any node named
/// `queue:orders` itself; whether each is in the windows decides which one the id is.
struct Candidates {
    keys: Vec<NodeKey>,
    present: Vec<bool>,
}

impl Candidates {
    fn new(ids: &[&str]) -> Self {
        let mut names: Vec<Arc<str>> = Vec::new();
        for id in ids {
            names.push(Arc::from(*id));
            if let Some((prefix, rest)) = id.split_once(':')
                && KINDS.iter().any(|k| k.as_str() == prefix)
            {
                names.push(Arc::from(rest));
            }
        }
        names.sort();
        names.dedup();
        let keys: Vec<NodeKey> = names
            .iter()
            .flat_map(|name| {
                KINDS.iter().map(|&kind| NodeKey {
                    kind,
                    name: name.clone(),
                })
            })
            .collect();
        let present = vec![false; keys.len()];
        Self { keys, present }
    }

    /// Marks the candidates the bucket names, the way a snapshot collects its nodes:
    /// services with spans, both ends of every edge, the nodes of per-trace loops.
    fn mark_present(&mut self, bucket: &Bucket) {
        for (i, key) in self.keys.iter().enumerate() {
            if key.kind == NodeKind::Service && bucket.services.contains_key(&key.name) {
                self.present[i] = true;
            }
        }
        let ends = bucket
            .edges
            .keys()
            .flat_map(|e| [&e.source, &e.target])
            .chain(bucket.trace_loops.keys().flatten());
        for end in ends {
            if let Some(i) = self.keys.iter().position(|k| k == end) {
                self.present[i] = true;
            }
        }
    }

    /// The present nodes a snapshot over all the windows would show as `id` (by
    /// `DisplayNames`' rule: a service keeps its name; another kind is prefixed with its
    /// kind when another present node has the same name).
    fn keys_named(&self, id: &str) -> Vec<NodeKey> {
        let present = || {
            self.keys
                .iter()
                .zip(&self.present)
                .filter(|(_, p)| **p)
                .map(|(k, _)| k)
        };
        present()
            .filter(|key| {
                let shared = present().filter(|k| k.name == key.name).count() > 1;
                if key.kind == NodeKind::Service || !shared {
                    *key.name == *id
                } else {
                    format!("{}:{}", key.kind.as_str(), key.name) == id
                }
            })
            .cloned()
            .collect()
    }
}

fn edge_figures<'a>(
    buckets: impl Iterator<Item = &'a Arc<Bucket>>,
    sources: &[NodeKey],
    targets: &[NodeKey],
    kind: Option<EdgeKind>,
) -> Figures {
    let kinds: Vec<EdgeKind> = match kind {
        Some(kind) => vec![kind],
        None => vec![EdgeKind::Sync, EdgeKind::Async],
    };
    let keys: Vec<EdgeKey> = sources
        .iter()
        .flat_map(|source| targets.iter().map(move |target| (source, target)))
        .flat_map(|(source, target)| {
            kinds.iter().map(|&kind| EdgeKey {
                source: source.clone(),
                target: target.clone(),
                kind,
            })
        })
        .collect();
    let (mut calls, mut errors, mut latency) = (0, 0, LatencySketch::default());
    for bucket in buckets {
        for stats in keys.iter().filter_map(|key| bucket.edges.get(key)) {
            calls += stats.calls;
            errors += stats.errors;
            latency.merge(&stats.latency);
        }
    }
    figures(calls, errors, &latency, true)
}

fn node_figures<'a>(buckets: impl Iterator<Item = &'a Arc<Bucket>>, keys: &[NodeKey]) -> Figures {
    let (mut calls, mut errors, mut latency) = (0, 0, LatencySketch::default());
    for bucket in buckets {
        for key in keys {
            if key.kind == NodeKind::Service {
                if let Some(stats) = bucket.services.get(&key.name) {
                    calls += stats.calls_in;
                    errors += stats.errors_in;
                    latency.merge(&stats.latency);
                }
                continue;
            }
            // Queues, databases and external nodes send no spans: their calls are those of
            // their incoming edges, and their latency is not measured.
            for (edge, stats) in &bucket.edges {
                if edge.target == *key {
                    calls += stats.calls;
                    errors += stats.errors;
                }
            }
        }
    }
    let has_latency = keys.iter().any(|k| k.kind == NodeKind::Service);
    figures(calls, errors, &latency, has_latency)
}

fn figures(calls: u64, errors: u64, latency: &LatencySketch, has_latency: bool) -> Figures {
    Figures {
        calls,
        errors,
        p50_ms: latency.quantile_ms(0.50),
        p95_ms: latency.quantile_ms(0.95),
        p99_ms: latency.quantile_ms(0.99),
        has_latency,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live_tests::Workload;
    use crate::test_support::{batch, span};
    use crate::{GraphConfig, LiveGraph, Snapshot};

    const SECOND: i64 = 1_000_000_000;

    fn graph_of(spans: &[crate::test_support::TestSpan]) -> LiveGraph {
        let mut graph = LiveGraph::new(GraphConfig::default());
        graph.ingest(&batch(spans), 100 * SECOND);
        graph.advance(200 * SECOND);
        graph
    }

    fn windows(graph: &LiveGraph, starts: &[i64], width: i64) -> Vec<Window> {
        starts
            .iter()
            .map(|&start| graph.window(start, start + width))
            .collect()
    }

    fn kind_of(snapshot: &Snapshot, id: &str) -> Option<NodeKind> {
        snapshot.nodes.iter().find(|n| n.id == id).map(|n| n.kind)
    }

    /// Over random workloads (sync, async by parent and by link, databases, external calls,
    /// and a queue and a database named like services), every node's and edge's series is its
    /// row in each step's snapshot wherever the step names its nodes as the whole window
    /// does, and the steps' calls and errors add up to the whole window's.
    #[test]
    fn an_elements_series_is_its_row_in_each_steps_snapshot() {
        for seed in 0..24 {
            let graph = graph_of(&Workload::traces(seed, 6));
            for width in [10 * SECOND, 20 * SECOND] {
                let starts: Vec<i64> = (-1..7).map(|i| i * width).collect();
                let whole = graph.snapshot(starts[0], starts[starts.len() - 1] + width);
                let steps: Vec<Snapshot> = starts
                    .iter()
                    .map(|&s| graph.snapshot(s, s + width))
                    .collect();
                let windows = windows(&graph, &starts, width);
                let check = |element: Element, row_in: &dyn Fn(&Snapshot) -> Option<Figures>| {
                    let series = element_series(&windows, &element);
                    assert_eq!(series.len(), steps.len());
                    let mut total = (0, 0);
                    for (figures, step) in series.iter().zip(&steps) {
                        assert_eq!(figures.is_none(), step.nodes.is_empty(), "{element:?}");
                        let figures = figures.unwrap_or_default();
                        total = (total.0 + figures.calls, total.1 + figures.errors);
                        if let Some(row) = row_in(step) {
                            assert_eq!(figures, row, "seed {seed}, {element:?}");
                        }
                    }
                    let all = row_in(&whole).unwrap_or_default();
                    assert_eq!(total, (all.calls, all.errors), "seed {seed}, {element:?}");
                };
                for node in &whole.nodes {
                    let row_in = |s: &Snapshot| {
                        let found = s
                            .nodes
                            .iter()
                            .find(|n| n.id == node.id && n.kind == node.kind)?;
                        Some(Figures {
                            calls: found.calls_in,
                            errors: found.errors_in,
                            p50_ms: found.p50_ms,
                            p95_ms: found.p95_ms,
                            p99_ms: found.p99_ms,
                            has_latency: found.kind == NodeKind::Service,
                        })
                    };
                    check(
                        Element::Node {
                            id: node.id.clone(),
                        },
                        &row_in,
                    );
                }
                for edge in &whole.edges {
                    let (source_kind, target_kind) =
                        (kind_of(&whole, &edge.source), kind_of(&whole, &edge.target));
                    let row_in = |s: &Snapshot| {
                        let same_names = kind_of(s, &edge.source) == source_kind
                            && kind_of(s, &edge.target) == target_kind;
                        let found = s.edges.iter().find(|e| e.key() == edge.key())?;
                        same_names.then_some(Figures {
                            calls: found.calls,
                            errors: found.errors,
                            p50_ms: found.p50_ms,
                            p95_ms: found.p95_ms,
                            p99_ms: found.p99_ms,
                            has_latency: true,
                        })
                    };
                    let element = Element::Edge {
                        source: edge.source.clone(),
                        target: edge.target.clone(),
                        kind: Some(edge.kind),
                    };
                    check(element, &row_in);
                }
            }
        }
    }

    /// The queue `billing` is `queue:billing` over the whole window because a service
    /// `billing` sends spans in it; in a step where the service is silent, the queue's calls
    /// still count under the id the panel was opened with.
    #[test]
    fn names_are_resolved_over_the_whole_window() {
        let graph = graph_of(&[
            span(1, 1, None, "SERVER", "billing").at_ms(1_000),
            span(2, 1, None, "PRODUCER", "orders")
                .at_ms(15_000)
                .attr("messaging.destination.name", "billing"),
        ]);
        let windows = windows(&graph, &[0, 10 * SECOND], 10 * SECOND);
        let queue = Element::Node {
            id: "queue:billing".into(),
        };
        let calls: Vec<Option<u64>> = element_series(&windows, &queue)
            .iter()
            .map(|f| f.map(|f| f.calls))
            .collect();
        assert_eq!(calls, [Some(0), Some(1)]);
        let edge = Element::Edge {
            source: "orders".into(),
            target: "queue:billing".into(),
            kind: None,
        };
        let calls: Vec<Option<u64>> = element_series(&windows, &edge)
            .iter()
            .map(|f| f.map(|f| f.calls))
            .collect();
        assert_eq!(calls, [Some(0), Some(1)]);
        let before = graph.window(-10 * SECOND, 0);
        assert_eq!(
            element_series(&[before], &queue),
            [None],
            "an empty graph is no data"
        );
    }
}

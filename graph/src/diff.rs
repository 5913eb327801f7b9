//! Comparing graphs: [`diff`] of two windows for people ("what changed since the deploy?"),
//! and [`delta`] of two successive snapshots for server-sent events.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Edge, EdgeKind, FeedbackLoop, Node, Snapshot};

/// Below this many calls (per window, normalised to the longer window's length) a change of
/// call count is not reported, and error rate and p95 are compared only when both windows
/// have at least this many calls: a handful of calls says nothing about a trend.
pub const MIN_CALLS: u64 = 10;
/// Error rates below 1% are compared as 1%, so 0.1% -> 0.5% is not "x5".
pub const ERROR_RATE_FLOOR: f64 = 0.01;
/// Latencies below 1 ms are compared as 1 ms.
pub const LATENCY_FLOOR_MS: f64 = 1.0;

/// What changed between two windows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GraphDiff {
    pub appeared_nodes: Vec<String>,
    pub vanished_nodes: Vec<String>,
    pub appeared_edges: Vec<Edge>,
    pub vanished_edges: Vec<Edge>,
    pub changed_edges: Vec<EdgeChange>,
}

/// An edge present in both windows whose strength moved by more than the ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeChange {
    pub before: Edge,
    pub after: Edge,
    /// For example `"calls x3.2"`, `"error rate 1% -> 12%"`, `"p95 40ms -> 180ms"`.
    pub reasons: Vec<String>,
}

/// Nodes and edges that appeared or vanished, and edges whose call rate, error rate or p95
/// moved by more than `ratio` either way (2.0: doubled or halved). Call counts are compared
/// as rates when the windows differ in length. A ratio below 1 is taken as its inverse;
/// one that is not a positive number is taken as 2. Everything is sorted by id.
pub fn diff(before: &Snapshot, after: &Snapshot, ratio: f64) -> GraphDiff {
    let ratio = if ratio.is_finite() && ratio > 0.0 {
        if ratio < 1.0 { 1.0 / ratio } else { ratio }
    } else {
        2.0
    };
    let before_nodes: BTreeSet<&str> = before.nodes.iter().map(|n| n.id.as_str()).collect();
    let after_nodes: BTreeSet<&str> = after.nodes.iter().map(|n| n.id.as_str()).collect();
    let before_edges = edges_by_key(&before.edges);
    let after_edges = edges_by_key(&after.edges);

    // Scale `before` counts to the length of `after`.
    let (before_length, after_length) = (window_length(before), window_length(after));
    let scale = match (before_length, after_length) {
        (Some(b), Some(a)) => a as f64 / b as f64,
        _ => 1.0,
    };

    let mut result = GraphDiff {
        appeared_nodes: after_nodes
            .difference(&before_nodes)
            .map(|s| s.to_string())
            .collect(),
        vanished_nodes: before_nodes
            .difference(&after_nodes)
            .map(|s| s.to_string())
            .collect(),
        ..GraphDiff::default()
    };
    for (key, edge) in &after_edges {
        match before_edges.get(key) {
            None => result.appeared_edges.push((*edge).clone()),
            Some(old) => {
                let reasons = change_reasons(old, edge, ratio, scale);
                if !reasons.is_empty() {
                    result.changed_edges.push(EdgeChange {
                        before: (*old).clone(),
                        after: (*edge).clone(),
                        reasons,
                    });
                }
            }
        }
    }
    for (key, edge) in &before_edges {
        if !after_edges.contains_key(key) {
            result.vanished_edges.push((*edge).clone());
        }
    }
    result
}

fn change_reasons(before: &Edge, after: &Edge, ratio: f64, scale: f64) -> Vec<String> {
    let mut reasons = Vec::new();
    let calls_before = before.calls as f64 * scale;
    let calls_after = after.calls as f64;
    if calls_before.max(calls_after) >= MIN_CALLS as f64 {
        let change = calls_after.max(1.0) / calls_before.max(1.0);
        if moved(change, ratio) {
            reasons.push(format!("calls x{}", format_factor(change)));
        }
    }
    if before.calls < MIN_CALLS || after.calls < MIN_CALLS {
        return reasons;
    }
    let rate = |e: &Edge| e.errors as f64 / e.calls as f64;
    let (rate_before, rate_after) = (rate(before), rate(after));
    let change = rate_after.max(ERROR_RATE_FLOOR) / rate_before.max(ERROR_RATE_FLOOR);
    if moved(change, ratio) {
        reasons.push(format!(
            "error rate {} -> {}",
            format_percent(rate_before),
            format_percent(rate_after)
        ));
    }
    let change = after.p95_ms.max(LATENCY_FLOOR_MS) / before.p95_ms.max(LATENCY_FLOOR_MS);
    if moved(change, ratio) {
        reasons.push(format!(
            "p95 {} -> {}",
            format_ms(before.p95_ms),
            format_ms(after.p95_ms)
        ));
    }
    reasons
}

fn moved(change: f64, ratio: f64) -> bool {
    change > ratio || change < 1.0 / ratio
}

fn window_length(snapshot: &Snapshot) -> Option<i64> {
    let length = snapshot.to_ns.checked_sub(snapshot.from_ns)?;
    (length > 0).then_some(length)
}

fn format_factor(factor: f64) -> String {
    if factor >= 1.0 {
        format!("{factor:.1}")
    } else {
        format!("{factor:.2}")
    }
}

fn format_percent(rate: f64) -> String {
    let percent = rate * 100.0;
    if (percent - percent.round()).abs() < 0.05 {
        format!("{percent:.0}%")
    } else {
        format!("{percent:.1}%")
    }
}

fn format_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

type EdgeId<'a> = (&'a str, &'a str, EdgeKind);

fn edges_by_key(edges: &[Edge]) -> BTreeMap<EdgeId<'_>, &Edge> {
    edges.iter().map(|e| (e.key(), e)).collect()
}

/// What a browser holding `previous` needs to show `next`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GraphDelta {
    pub added: Vec<Edge>,
    /// Edges in both whose figures differ, as they are in `next`.
    pub changed: Vec<Edge>,
    pub removed: Vec<(String, String, EdgeKind)>,
    pub nodes_added: Vec<Node>,
    /// Nodes in both whose figures differ, as they are in `next`.
    pub nodes_changed: Vec<Node>,
    pub nodes_removed: Vec<String>,
    /// `Some(next.loops)` when any loop appeared, vanished or changed its figures.
    pub loops: Option<Vec<FeedbackLoop>>,
}

impl GraphDelta {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.nodes_added.is_empty()
            && self.nodes_changed.is_empty()
            && self.nodes_removed.is_empty()
            && self.loops.is_none()
    }
}

/// The difference between two successive snapshots, for server-sent events.
pub fn delta(previous: &Snapshot, next: &Snapshot) -> GraphDelta {
    let previous_edges = edges_by_key(&previous.edges);
    let next_edges = edges_by_key(&next.edges);
    let previous_nodes: BTreeMap<&str, &Node> =
        previous.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let next_nodes: BTreeMap<&str, &Node> = next.nodes.iter().map(|n| (n.id.as_str(), n)).collect();

    let mut result = GraphDelta::default();
    for (key, edge) in &next_edges {
        match previous_edges.get(key) {
            None => result.added.push((*edge).clone()),
            Some(old) if old != edge => result.changed.push((*edge).clone()),
            Some(_) => {}
        }
    }
    for (source, target, kind) in previous_edges.keys() {
        if !next_edges.contains_key(&(*source, *target, *kind)) {
            result
                .removed
                .push((source.to_string(), target.to_string(), *kind));
        }
    }
    for (id, node) in &next_nodes {
        match previous_nodes.get(id) {
            None => result.nodes_added.push((*node).clone()),
            Some(old) if old != node => result.nodes_changed.push((*node).clone()),
            Some(_) => {}
        }
    }
    for id in previous_nodes.keys() {
        if !next_nodes.contains_key(id) {
            result.nodes_removed.push(id.to_string());
        }
    }
    if previous.loops != next.loops {
        result.loops = Some(next.loops.clone());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeKind;

    /// "a>b calls errors p95" edges; nodes are the edges' endpoints.
    fn snapshot(from_ns: i64, to_ns: i64, edges: &[(&str, &str, u64, u64, f64)]) -> Snapshot {
        let edges: Vec<Edge> = edges
            .iter()
            .map(|(source, target, calls, errors, p95_ms)| Edge {
                source: source.to_string(),
                target: target.to_string(),
                kind: EdgeKind::Sync,
                calls: *calls,
                errors: *errors,
                p50_ms: p95_ms / 2.0,
                p95_ms: *p95_ms,
                p99_ms: p95_ms * 1.5,
                bytes: 0,
                amplification: 0.0,
                trace_loops: 0,
                health: Default::default(),
                amplified: false,
            })
            .collect();
        let ids: BTreeSet<&str> = edges
            .iter()
            .flat_map(|e| [e.source.as_str(), e.target.as_str()])
            .collect();
        let nodes = ids
            .into_iter()
            .map(|id| Node {
                id: id.to_string(),
                kind: NodeKind::Service,
                calls_in: 0,
                errors_in: 0,
                p50_ms: 0.0,
                p95_ms: 0.0,
                p99_ms: 0.0,
                health: Default::default(),
                attributes: Default::default(),
                group: None,
            })
            .collect();
        let loops = crate::loops::feedback_loops(&edges);
        Snapshot {
            from_ns,
            to_ns,
            nodes,
            edges,
            loops,
        }
    }

    fn render_diff(diff: &GraphDiff) -> Vec<String> {
        let mut lines = Vec::new();
        lines.extend(diff.appeared_nodes.iter().map(|n| format!("+node {n}")));
        lines.extend(diff.vanished_nodes.iter().map(|n| format!("-node {n}")));
        lines.extend(
            diff.appeared_edges
                .iter()
                .map(|e| format!("+edge {}>{}", e.source, e.target)),
        );
        lines.extend(
            diff.vanished_edges
                .iter()
                .map(|e| format!("-edge {}>{}", e.source, e.target)),
        );
        lines.extend(diff.changed_edges.iter().map(|c| {
            format!(
                "~edge {}>{}: {}",
                c.after.source,
                c.after.target,
                c.reasons.join(", ")
            )
        }));
        lines
    }

    fn check_diff(before: &Snapshot, after: &Snapshot, ratio: f64, expected: &[&str]) {
        assert_eq!(render_diff(&diff(before, after, ratio)), expected);
    }

    #[test]
    fn an_identical_window_has_no_diff() {
        let window = snapshot(0, 60, &[("a", "b", 100, 1, 40.0)]);
        check_diff(&window, &window, 2.0, &[]);
    }

    #[test]
    fn appeared_and_vanished_nodes_and_edges_are_listed() {
        check_diff(
            &snapshot(
                0,
                60,
                &[
                    ("gateway", "orders", 100, 0, 5.0),
                    ("orders", "legacy", 3, 0, 5.0),
                ],
            ),
            &snapshot(
                0,
                60,
                &[
                    ("gateway", "orders", 100, 0, 5.0),
                    ("orders", "billing", 3, 0, 5.0),
                ],
            ),
            2.0,
            &[
                "+node billing",
                "-node legacy",
                "+edge orders>billing",
                "-edge orders>legacy",
            ],
        );
    }

    #[test]
    fn changes_beyond_the_ratio_give_reasons() {
        check_diff(
            &snapshot(0, 60, &[("a", "b", 100, 1, 40.0), ("a", "c", 100, 0, 10.0)]),
            &snapshot(
                0,
                60,
                &[("a", "b", 320, 38, 180.0), ("a", "c", 150, 0, 15.0)],
            ),
            2.0,
            &["~edge a>b: calls x3.2, error rate 1% -> 11.9%, p95 40ms -> 180ms"],
        );
    }

    #[test]
    fn a_halved_rate_is_a_change_too() {
        check_diff(
            &snapshot(0, 60, &[("a", "b", 100, 0, 5.0)]),
            &snapshot(0, 60, &[("a", "b", 40, 0, 5.0)]),
            2.0,
            &["~edge a>b: calls x0.40"],
        );
    }

    #[test]
    fn tiny_counts_and_rates_do_not_flap() {
        check_diff(
            // 1 call -> 4 calls, 1 error in 2 calls, 0.2ms -> 0.9ms: all under the floors.
            &snapshot(0, 60, &[("a", "b", 1, 0, 0.2), ("a", "c", 2, 1, 0.2)]),
            &snapshot(0, 60, &[("a", "b", 4, 0, 0.9), ("a", "c", 2, 0, 0.9)]),
            2.0,
            &[],
        );
        check_diff(
            // 0.1% -> 0.5% error rate stays under the 1% floor.
            &snapshot(0, 60, &[("a", "b", 1000, 1, 5.0)]),
            &snapshot(0, 60, &[("a", "b", 1000, 5, 5.0)]),
            2.0,
            &[],
        );
    }

    #[test]
    fn windows_of_different_lengths_compare_rates() {
        // 600 calls in an hour and 50 in five minutes are the same rate.
        check_diff(
            &snapshot(0, 3_600, &[("a", "b", 600, 0, 5.0)]),
            &snapshot(0, 300, &[("a", "b", 50, 0, 5.0)]),
            2.0,
            &[],
        );
        check_diff(
            &snapshot(0, 3_600, &[("a", "b", 600, 0, 5.0)]),
            &snapshot(0, 300, &[("a", "b", 200, 0, 5.0)]),
            2.0,
            &["~edge a>b: calls x4.0"],
        );
    }

    #[test]
    fn an_unchanged_graph_gives_an_empty_delta() {
        let window = snapshot(0, 60, &[("a", "b", 10, 0, 5.0), ("b", "a", 1, 0, 5.0)]);
        let result = delta(&window, &window.clone());
        assert!(result.is_empty(), "{result:?}");
    }

    #[test]
    fn a_node_whose_figures_change_is_sent_again() {
        let previous = snapshot(0, 60, &[("a", "b", 10, 0, 5.0)]);
        let mut next = previous.clone();
        next.nodes[1].calls_in = 12;
        let result = delta(&previous, &next);
        let ids: Vec<(&str, u64)> = result
            .nodes_changed
            .iter()
            .map(|n| (n.id.as_str(), n.calls_in))
            .collect();
        assert_eq!(ids, [("b", 12)]);
        assert!(result.added.is_empty() && result.changed.is_empty() && result.loops.is_none());
    }

    #[test]
    fn a_delta_lists_added_changed_and_removed() {
        let previous = snapshot(0, 60, &[("a", "b", 10, 0, 5.0), ("a", "c", 1, 0, 5.0)]);
        let next = snapshot(
            0,
            60,
            &[
                ("a", "b", 11, 0, 5.0),
                ("b", "d", 1, 0, 5.0),
                ("d", "b", 1, 0, 5.0),
            ],
        );
        let result = delta(&previous, &next);
        let keys = |edges: &[Edge]| -> Vec<String> {
            edges
                .iter()
                .map(|e| format!("{}>{} {}", e.source, e.target, e.calls))
                .collect()
        };
        assert_eq!(keys(&result.added), ["b>d 1", "d>b 1"]);
        assert_eq!(keys(&result.changed), ["a>b 11"]);
        assert_eq!(
            result.removed,
            [("a".to_string(), "c".to_string(), EdgeKind::Sync)]
        );
        let ids: Vec<&str> = result.nodes_added.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["d"]);
        assert_eq!(result.nodes_removed, ["c"]);
        assert!(!result.is_empty());
        let loops = result.loops.expect("a loop appeared");
        assert_eq!(loops.len(), 1);
        assert_eq!(&*loops[0].id, "b -> d");
    }
}

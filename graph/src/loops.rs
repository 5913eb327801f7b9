//! Feedback loops: the cycles of a graph, found component by component (strongly connected
//! components from petgraph, then Johnson's elementary cycles inside each).
//!
//! Components come from `kosaraju_scc`, not `tarjan_scc`: petgraph 0.8's Tarjan recurses once
//! per node of a path and overflows a 2 MB thread stack on a chain of 20,000 services (the
//! `a_long_cycle_does_not_overflow_the_stack` test), while Kosaraju walks with explicit
//! stacks. Both give the same components.
//!
//! A strongly connected component bigger than one cycle is listed as its elementary cycles
//! (every cycle that visits no node twice), each starting from its smallest node id, at most
//! [`MAX_CYCLES_PER_COMPONENT`] per component: a dense component can hold exponentially many
//! cycles, and the first ones found (smallest start node first, neighbours in id order) are
//! the ones kept. The result is sorted by id, so it does not depend on the order of `edges`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use foldhash::fast::RandomState;

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::NodeFiltered;

use crate::FastMap;
use crate::types::{Edge, FeedbackLoop};

/// Bound on the cycles listed for one strongly connected component.
pub const MAX_CYCLES_PER_COMPONENT: usize = 100;

/// How many edge sets' cycles are kept ([`feedback_loops`]).
const CACHED_EDGE_SETS: usize = 8;

/// The loops of the last edge sets asked about, by a 128-bit hash of their (source, target)
/// pairs (seeded at random per process). The cycle search is the costly part of a large
/// graph's snapshot (0.8 s at 100,000 edges) and depends only on which edges exist, which
/// changes far less often than a system's graph is read; so does building the loops' node
/// and edge lists (170 ms for 100 loops thousands of nodes long), which every read then
/// shares. The loops' figures are computed afresh from the edges every time.
static CYCLES: Mutex<VecDeque<(u128, Shapes)>> = Mutex::new(VecDeque::new());

/// Loops without their figures (`calls` and `trace_loops` are 0), sorted by id.
type Shapes = Arc<Vec<FeedbackLoop>>;

fn edge_set_key(edges: &[Edge]) -> u128 {
    static SEEDS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    let (one, two) = SEEDS.get_or_init(|| (RandomState::default(), RandomState::default()));
    let mut pairs: Vec<(&str, &str)> = edges
        .iter()
        .map(|e| (e.source.as_str(), e.target.as_str()))
        .collect();
    // A snapshot's edges come sorted by (source, target, kind).
    if !pairs.is_sorted() {
        pairs.sort_unstable();
    }
    pairs.dedup();
    let (mut a, mut b) = (one.build_hasher(), two.build_hasher());
    for (source, target) in pairs {
        for hasher in [&mut a, &mut b] {
            hasher.write(source.as_bytes());
            hasher.write_u8(0xff);
            hasher.write(target.as_bytes());
            hasher.write_u8(0xfe);
        }
    }
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// The feedback loops of any edge set: sync and async edges alike, self-loops included.
/// `trace_loops` is left at 0 (it comes from traces, not from edges).
pub fn feedback_loops(edges: &[Edge]) -> Vec<FeedbackLoop> {
    let key = edge_set_key(edges);
    let cached = CYCLES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(known, _)| *known == key)
        .map(|(_, cycles)| cycles.clone());
    let shapes = match cached {
        Some(shapes) => shapes,
        None => {
            let shapes = Arc::new(shapes_of(cycles_of(edges)));
            let mut kept = CYCLES.lock().unwrap_or_else(PoisonError::into_inner);
            kept.push_front((key, shapes.clone()));
            kept.truncate(CACHED_EDGE_SETS);
            shapes
        }
    };
    with_figures(&shapes, edges)
}

/// [`feedback_loops`] with the cycles searched every time, never kept (for benchmarks).
pub fn feedback_loops_searched(edges: &[Edge]) -> Vec<FeedbackLoop> {
    with_figures(&shapes_of(cycles_of(edges)), edges)
}

/// The loops through `cycles`, without figures, sorted by id.
fn shapes_of(cycles: Vec<Vec<String>>) -> Vec<FeedbackLoop> {
    let none = FastMap::default();
    let mut shapes: Vec<FeedbackLoop> = cycles
        .into_iter()
        .map(|nodes| loop_of_cycle(nodes, &none))
        .collect();
    shapes.sort_by(|a, b| a.id.cmp(&b.id));
    shapes
}

/// The loops of `shapes` (sharing their lists) with the figures of `edges`.
fn with_figures(shapes: &[FeedbackLoop], edges: &[Edge]) -> Vec<FeedbackLoop> {
    let calls = pair_calls(edges);
    shapes
        .iter()
        .map(|shape| FeedbackLoop {
            calls: calls_round(&shape.edges, &calls),
            ..shape.clone()
        })
        .collect()
}

/// The traffic round a loop: the smallest call count of its edges.
fn calls_round(edges: &[(String, String)], pair_calls: &FastMap<(&str, &str), u64>) -> u64 {
    edges
        .iter()
        .map(|(a, b)| {
            pair_calls
                .get(&(a.as_str(), b.as_str()))
                .copied()
                .unwrap_or(0)
        })
        .min()
        .unwrap_or(0)
}

/// Every elementary cycle of the edges (at most [`MAX_CYCLES_PER_COMPONENT`] per
/// component), each as its nodes in cycle order.
fn cycles_of(edges: &[Edge]) -> Vec<Vec<String>> {
    let ids: Vec<&str> = edges
        .iter()
        .flat_map(|e| [e.source.as_str(), e.target.as_str()])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index_of: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut adjacency: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
    for edge in edges {
        let (source, target) = (
            index_of[edge.source.as_str()],
            index_of[edge.target.as_str()],
        );
        adjacency[source].push(target);
    }
    for neighbours in &mut adjacency {
        neighbours.sort_unstable();
        neighbours.dedup();
    }

    let mut cycles: Vec<Vec<String>> = Vec::new();
    for mut members in strongly_connected(&adjacency, |_| true) {
        if !is_cyclic(&adjacency, &members) {
            continue;
        }
        // The component on its own, nodes renumbered in id order.
        members.sort_unstable();
        let local: HashMap<usize, usize> =
            members.iter().enumerate().map(|(i, m)| (*m, i)).collect();
        let component: Vec<Vec<usize>> = members
            .iter()
            .map(|m| {
                adjacency[*m]
                    .iter()
                    .filter_map(|n| local.get(n).copied())
                    .collect()
            })
            .collect();
        for cycle in elementary_cycles(&component) {
            cycles.push(cycle.iter().map(|i| ids[members[*i]].to_string()).collect());
        }
    }
    cycles
}

/// Strongly connected components of the nodes `allowed` keeps (petgraph's Kosaraju).
fn strongly_connected(
    adjacency: &[Vec<usize>],
    allowed: impl Fn(usize) -> bool,
) -> Vec<Vec<usize>> {
    let mut graph: DiGraph<(), ()> = DiGraph::with_capacity(adjacency.len(), 0);
    for _ in adjacency {
        graph.add_node(());
    }
    for (source, neighbours) in adjacency.iter().enumerate() {
        for target in neighbours {
            graph.add_edge(NodeIndex::new(source), NodeIndex::new(*target), ());
        }
    }
    let filtered = NodeFiltered::from_fn(&graph, |n: NodeIndex| allowed(n.index()));
    kosaraju_scc(&filtered)
        .into_iter()
        .map(|component| component.iter().map(|n| n.index()).collect())
        .collect()
}

/// A component holds a cycle when it has two nodes or more, or one with a self-loop.
fn is_cyclic(adjacency: &[Vec<usize>], component: &[usize]) -> bool {
    match component {
        [single] => adjacency[*single].binary_search(single).is_ok(),
        other => other.len() > 1,
    }
}

/// Calls from one node to another, sync and async added: the traffic a loop can carry.
pub(crate) fn pair_calls(edges: &[Edge]) -> FastMap<(&str, &str), u64> {
    let mut calls: FastMap<(&str, &str), u64> = FastMap::default();
    for edge in edges {
        *calls
            .entry((edge.source.as_str(), edge.target.as_str()))
            .or_default() += edge.calls;
    }
    calls
}

/// The loop through `nodes` (distinct, in cycle order, starting anywhere).
pub(crate) fn loop_of_cycle(
    mut nodes: Vec<String>,
    pair_calls: &FastMap<(&str, &str), u64>,
) -> FeedbackLoop {
    let smallest = nodes
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.cmp(b.1))
        .map_or(0, |(i, _)| i);
    nodes.rotate_left(smallest);
    let edges: Vec<(String, String)> = nodes
        .iter()
        .zip(nodes.iter().cycle().skip(1))
        .map(|(a, b)| (a.clone(), b.clone()))
        .collect();
    let calls = calls_round(&edges, pair_calls);
    FeedbackLoop {
        id: nodes.join(" -> ").into(),
        nodes: nodes.into(),
        edges: edges.into(),
        calls,
        trace_loops: 0,
    }
}

/// Johnson's algorithm on one strongly connected component (nodes numbered in id order),
/// with explicit stacks (components can be thousands of nodes deep). Each round takes the
/// smallest node `start` that is on a cycle among the nodes `>= start`, lists the cycles
/// through it within its component there, and moves past it; each cycle is found once, from
/// its smallest node. A round costs a pass over the component and finds at least one cycle,
/// so the bound on cycles bounds the time.
fn elementary_cycles(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let count = adjacency.len();
    let mut cycles = Vec::new();
    let mut blocked = vec![false; count];
    let mut blocked_by: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut in_component = vec![false; count];
    let mut lowest = 0;
    while lowest < count && cycles.len() < MAX_CYCLES_PER_COMPONENT {
        // The component, among nodes >= lowest, that holds the smallest node on a cycle.
        let Some(component) = strongly_connected(adjacency, |n| n >= lowest)
            .into_iter()
            .filter(|c| is_cyclic(adjacency, c))
            .min_by_key(|c| c.iter().min().copied())
        else {
            break;
        };
        let Some(&start) = component.iter().min() else {
            break;
        };
        in_component.fill(false);
        for &node in &component {
            in_component[node] = true;
            blocked[node] = false;
            blocked_by[node].clear();
        }
        let mut path = vec![start];
        blocked[start] = true;
        // (node, next neighbour to try, a cycle was found below it)
        let mut stack: Vec<(usize, usize, bool)> = vec![(start, 0, false)];
        while let Some(top) = stack.last_mut() {
            let node = top.0;
            if let Some(&next) = adjacency[node].get(top.1) {
                top.1 += 1;
                if !in_component[next] {
                    continue;
                }
                if next == start {
                    top.2 = true;
                    cycles.push(path.clone());
                    if cycles.len() >= MAX_CYCLES_PER_COMPONENT {
                        return cycles;
                    }
                } else if !blocked[next] {
                    blocked[next] = true;
                    path.push(next);
                    stack.push((next, 0, false));
                }
                continue;
            }
            let found = top.2;
            stack.pop();
            path.pop();
            if found {
                unblock(node, &mut blocked, &mut blocked_by);
            } else {
                for &next in &adjacency[node] {
                    if in_component[next] && !blocked_by[next].contains(&node) {
                        blocked_by[next].push(node);
                    }
                }
            }
            if let Some(parent) = stack.last_mut() {
                parent.2 |= found;
            }
        }
        lowest = start + 1;
    }
    cycles
}

fn unblock(node: usize, blocked: &mut [bool], blocked_by: &mut [Vec<usize>]) {
    let mut todo = vec![node];
    while let Some(current) = todo.pop() {
        if blocked[current] {
            blocked[current] = false;
            todo.append(&mut blocked_by[current]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EdgeKind;

    fn edge(source: &str, target: &str, calls: u64) -> Edge {
        Edge {
            source: source.into(),
            target: target.into(),
            kind: EdgeKind::Sync,
            calls,
            errors: 0,
            p50_ms: 0.0,
            p95_ms: 0.0,
            p99_ms: 0.0,
            bytes: 0,
            amplification: 0.0,
            trace_loops: 0,
            health: Default::default(),
            amplified: false,
        }
    }

    /// The cycles of an edge set are kept, its figures never: the same edges with other
    /// calls give the same loops with the new calls, and another edge set its own loops.
    #[test]
    fn loops_of_an_edge_set_seen_before_carry_the_new_figures() {
        let first = [edge("a", "b", 3), edge("b", "a", 4), edge("b", "c", 1)];
        let loops = feedback_loops(&first);
        assert_eq!(loops.len(), 1);
        assert_eq!(loops[0].calls, 3);
        let busier = [edge("a", "b", 30), edge("b", "a", 40), edge("b", "c", 1)];
        let loops = feedback_loops(&busier);
        assert_eq!(loops.len(), 1);
        assert_eq!(loops[0].calls, 30, "{loops:?}");
        let more = [
            edge("a", "b", 3),
            edge("b", "a", 4),
            edge("b", "c", 1),
            edge("c", "a", 1),
        ];
        assert_eq!(feedback_loops(&more).len(), 2);
        assert_eq!(feedback_loops(&first).len(), 1);
    }

    /// `edges` as "a>b:calls", loops rendered as "id (calls)".
    fn check(edges: &[&str], expected: &[&str]) {
        let edges: Vec<Edge> = edges
            .iter()
            .map(|text| {
                let (pair, calls) = text.split_once(':').unwrap_or((text, "1"));
                let (source, target) = pair.split_once('>').expect("a>b");
                edge(source, target, calls.parse().expect("calls"))
            })
            .collect();
        let found: Vec<String> = feedback_loops(&edges)
            .iter()
            .map(|l| format!("{} ({})", l.id, l.calls))
            .collect();
        assert_eq!(found, expected);
        let mut reversed = edges.clone();
        reversed.reverse();
        assert_eq!(
            feedback_loops(&reversed),
            feedback_loops(&edges),
            "order of edges"
        );
    }

    #[test]
    fn a_tree_has_no_loop() {
        check(&[], &[]);
        check(&["gateway>orders", "orders>inventory", "orders>db"], &[]);
    }

    #[test]
    fn a_self_loop_is_a_loop() {
        check(&["orders>orders:7", "gateway>orders"], &["orders (7)"]);
    }

    #[test]
    fn a_loop_through_a_queue_lists_its_nodes_in_cycle_order() {
        check(
            &[
                "orders>topic:10",
                "topic>billing:8",
                "billing>orders:3",
                "gateway>orders",
            ],
            &["billing -> orders -> topic (3)"],
        );
        let loops = feedback_loops(&[
            edge("orders", "topic", 10),
            edge("topic", "billing", 8),
            edge("billing", "orders", 3),
        ]);
        assert_eq!(*loops[0].nodes, ["billing", "orders", "topic"]);
        let pairs: Vec<(&str, &str)> = loops[0]
            .edges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("billing", "orders"),
                ("orders", "topic"),
                ("topic", "billing")
            ]
        );
    }

    #[test]
    fn a_component_with_two_cycles_lists_both() {
        check(
            &["a>b:5", "b>a:4", "a>c:2", "c>a:9", "b>c:1"],
            &["a -> b (4)", "a -> b -> c (1)", "a -> c (2)"],
        );
    }

    #[test]
    fn sync_and_async_calls_between_two_nodes_add_up() {
        let mut async_edge = edge("b", "a", 6);
        async_edge.kind = EdgeKind::Async;
        let loops = feedback_loops(&[edge("a", "b", 20), edge("b", "a", 1), async_edge]);
        assert_eq!(loops.len(), 1);
        assert_eq!(loops[0].calls, 7);
    }

    #[test]
    fn separate_components_give_separate_loops() {
        check(
            &["x>y", "y>x", "p>q", "q>r", "r>p", "y>p"],
            &["p -> q -> r (1)", "x -> y (1)"],
        );
    }

    #[test]
    fn a_complete_graph_is_cut_at_the_bound() {
        let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
        let mut edges = Vec::new();
        for a in &names {
            for b in &names {
                if a != b {
                    edges.push(edge(a, b, 1));
                }
            }
        }
        let loops = feedback_loops(&edges);
        assert_eq!(loops.len(), MAX_CYCLES_PER_COMPONENT);
        assert!(loops.iter().any(|l| &*l.id == "n0 -> n1"));
    }

    #[test]
    fn a_long_cycle_does_not_overflow_the_stack() {
        let count = 20_000;
        let edges: Vec<Edge> = (0..count)
            .map(|i| edge(&format!("s{i:05}"), &format!("s{:05}", (i + 1) % count), 1))
            .collect();
        let loops = feedback_loops(&edges);
        assert_eq!(loops.len(), 1);
        assert_eq!(loops[0].nodes.len(), count);
    }
}

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
//!
//! The search works on the edge set's distinct (source, target) pairs, sorted, with node
//! numbers in id order; names are `Arc<str>` shared by every loop through a node. Each loop
//! keeps the positions of its edges among those pairs, so a read of an edge set seen before
//! sums the calls per pair once and takes each loop's smallest by position: no string is
//! hashed or compared per loop edge (100 loops thousands of nodes long cost 56 ms that way).

use std::collections::VecDeque;
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
/// pairs (seeded at random per process). The cycle search depends only on which edges
/// exist, which changes far less often than a system's graph is read; so does building the
/// loops' node and edge lists, which every read then shares. The loops' figures are
/// computed afresh from the edges every time.
static CYCLES: Mutex<VecDeque<(u128, Arc<Shapes>)>> = Mutex::new(VecDeque::new());

/// Loops without their figures (`calls` and `trace_loops` are 0), sorted by id, and for each
/// the positions of its edges among the edge set's sorted pairs ([`Pairs`]).
struct Shapes {
    loops: Vec<FeedbackLoop>,
    positions: Vec<Vec<u32>>,
}

/// An edge set's distinct (source, target) pairs, sorted, with the calls of each (sync and
/// async calls between the same two nodes added).
pub(crate) struct Pairs<'a> {
    pairs: Vec<(&'a str, &'a str)>,
    calls: Vec<u64>,
}

impl<'a> Pairs<'a> {
    fn of(edges: &'a [Edge]) -> Self {
        Self::of_calls(
            edges
                .iter()
                .map(|e| (e.source.as_str(), e.target.as_str(), e.calls)),
        )
    }

    /// The pairs of (source, target, calls) triples, in any order.
    pub(crate) fn of_calls(edges: impl Iterator<Item = (&'a str, &'a str, u64)> + Clone) -> Self {
        let (low, _) = edges.size_hint();
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(low);
        let mut calls: Vec<u64> = Vec::with_capacity(low);
        // A snapshot's edges come sorted by (source, target, kind): one pass then.
        for (source, target, count) in edges.clone() {
            let pair = (source, target);
            match pairs.last() {
                Some(last) if *last == pair => {
                    if let Some(sum) = calls.last_mut() {
                        *sum += count;
                    }
                }
                Some(last) if *last > pair => return Self::unsorted(edges),
                _ => {
                    pairs.push(pair);
                    calls.push(count);
                }
            }
        }
        Self { pairs, calls }
    }

    /// Calls from `source` to `target`, sync and async added.
    pub(crate) fn calls(&self, source: &str, target: &str) -> u64 {
        self.pairs
            .binary_search(&(source, target))
            .ok()
            .and_then(|at| self.calls.get(at))
            .copied()
            .unwrap_or(0)
    }

    fn unsorted(edges: impl Iterator<Item = (&'a str, &'a str, u64)>) -> Self {
        let mut all: Vec<(&str, &str, u64)> = edges.collect();
        all.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        Self::of_calls(all.into_iter())
    }

    fn key(&self) -> u128 {
        static SEEDS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
        let (one, two) = SEEDS.get_or_init(|| (RandomState::default(), RandomState::default()));
        let (mut a, mut b) = (one.build_hasher(), two.build_hasher());
        for (source, target) in &self.pairs {
            for hasher in [&mut a, &mut b] {
                hasher.write(source.as_bytes());
                hasher.write_u8(0xff);
                hasher.write(target.as_bytes());
                hasher.write_u8(0xfe);
            }
        }
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }
}

/// The feedback loops of any edge set: sync and async edges alike, self-loops included.
/// `trace_loops` is left at 0 (it comes from traces, not from edges).
pub fn feedback_loops(edges: &[Edge]) -> Vec<FeedbackLoop> {
    loops_of(&Pairs::of(edges))
}

/// [`feedback_loops`] of an edge set's pairs.
pub(crate) fn loops_of(pairs: &Pairs<'_>) -> Vec<FeedbackLoop> {
    let key = pairs.key();
    let cached = CYCLES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(known, _)| *known == key)
        .map(|(_, shapes)| shapes.clone());
    let shapes = match cached {
        Some(shapes) => shapes,
        None => {
            let shapes = Arc::new(shapes_of(&pairs.pairs));
            let mut kept = CYCLES.lock().unwrap_or_else(PoisonError::into_inner);
            kept.push_front((key, shapes.clone()));
            kept.truncate(CACHED_EDGE_SETS);
            shapes
        }
    };
    with_figures(&shapes, &pairs.calls)
}

/// [`feedback_loops`] with the cycles searched every time, never kept (for benchmarks).
pub fn feedback_loops_searched(edges: &[Edge]) -> Vec<FeedbackLoop> {
    let pairs = Pairs::of(edges);
    with_figures(&shapes_of(&pairs.pairs), &pairs.calls)
}

/// The loops of `shapes` (sharing their lists) with the calls of their pairs.
fn with_figures(shapes: &Shapes, calls: &[u64]) -> Vec<FeedbackLoop> {
    shapes
        .loops
        .iter()
        .zip(&shapes.positions)
        .map(|(shape, positions)| FeedbackLoop {
            calls: positions
                .iter()
                .map(|&p| calls.get(p as usize).copied().unwrap_or(0))
                .min()
                .unwrap_or(0),
            ..shape.clone()
        })
        .collect()
}

/// Every elementary cycle of the sorted, distinct `pairs` (at most
/// [`MAX_CYCLES_PER_COMPONENT`] per component), as loops sorted by id.
fn shapes_of<'a>(pairs: &[(&'a str, &'a str)]) -> Shapes {
    // Node numbers in id order: first as met, then renumbered after sorting the names.
    let mut met: FastMap<&'a str, u32> = FastMap::default();
    let mut names: Vec<&'a str> = Vec::new();
    let mut number = |name: &'a str| -> u32 {
        *met.entry(name).or_insert_with(|| {
            names.push(name);
            (names.len() - 1) as u32
        })
    };
    let ends: Vec<(u32, u32)> = pairs
        .iter()
        .map(|(source, target)| (number(source), number(target)))
        .collect();
    let mut order: Vec<u32> = (0..names.len() as u32).collect();
    order.sort_unstable_by_key(|&i| names[i as usize]);
    let mut rank = vec![0u32; names.len()];
    for (position, &i) in order.iter().enumerate() {
        rank[i as usize] = position as u32;
    }
    // Neighbours in id order, each with the position of its pair.
    let mut adjacency: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    let mut pair_at: Vec<Vec<u32>> = vec![Vec::new(); names.len()];
    {
        let mut out: Vec<Vec<(usize, u32)>> = vec![Vec::new(); names.len()];
        for (position, (source, target)) in ends.iter().enumerate() {
            out[rank[*source as usize] as usize]
                .push((rank[*target as usize] as usize, position as u32));
        }
        for (node, mut neighbours) in out.into_iter().enumerate() {
            neighbours.sort_unstable();
            adjacency[node] = neighbours.iter().map(|(n, _)| *n).collect();
            pair_at[node] = neighbours.iter().map(|(_, p)| *p).collect();
        }
    }
    let sorted_names: Vec<&str> = order.iter().map(|&i| names[i as usize]).collect();
    let mut shared: Vec<Option<Arc<str>>> = vec![None; sorted_names.len()];
    let mut name_of = |node: usize| -> Arc<str> {
        shared[node]
            .get_or_insert_with(|| Arc::from(sorted_names[node]))
            .clone()
    };

    let mut found: Vec<(FeedbackLoop, Vec<u32>)> = Vec::new();
    for mut members in strongly_connected(&adjacency, |_| true) {
        if !is_cyclic(&adjacency, &members) {
            continue;
        }
        // The component on its own, nodes renumbered in id order.
        members.sort_unstable();
        let mut local = vec![usize::MAX; adjacency.len()];
        for (i, m) in members.iter().enumerate() {
            local[*m] = i;
        }
        let component: Vec<Vec<usize>> = members
            .iter()
            .map(|m| {
                adjacency[*m]
                    .iter()
                    .map(|n| local[*n])
                    .filter(|n| *n != usize::MAX)
                    .collect()
            })
            .collect();
        for cycle in elementary_cycles(&component) {
            // Found from its smallest node, so it starts there already.
            let nodes: Vec<usize> = cycle.iter().map(|i| members[*i]).collect();
            let positions: Vec<u32> = nodes
                .iter()
                .zip(nodes.iter().cycle().skip(1))
                .map(|(a, b)| {
                    adjacency[*a]
                        .binary_search(b)
                        .map_or(u32::MAX, |at| pair_at[*a][at])
                })
                .collect();
            let names: Vec<Arc<str>> = nodes.iter().map(|n| name_of(*n)).collect();
            found.push((shape(names), positions));
        }
    }
    found.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let (loops, positions) = found.into_iter().unzip();
    Shapes { loops, positions }
}

/// The loop through `nodes` (distinct, in cycle order, starting at the smallest), without
/// figures.
fn shape(nodes: Vec<Arc<str>>) -> FeedbackLoop {
    let edges: Vec<(Arc<str>, Arc<str>)> = nodes
        .iter()
        .zip(nodes.iter().cycle().skip(1))
        .map(|(a, b)| (a.clone(), b.clone()))
        .collect();
    let mut id = String::with_capacity(nodes.iter().map(|n| n.len() + 4).sum());
    for (i, node) in nodes.iter().enumerate() {
        if i > 0 {
            id.push_str(" -> ");
        }
        id.push_str(node);
    }
    FeedbackLoop {
        id: id.into(),
        nodes: nodes.into(),
        edges: edges.into(),
        calls: 0,
        trace_loops: 0,
    }
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

/// The loop through `nodes` (distinct, in cycle order, starting anywhere), its calls those
/// of its least busy pair.
pub(crate) fn loop_of_cycle(mut nodes: Vec<Arc<str>>, pairs: &Pairs<'_>) -> FeedbackLoop {
    let smallest = nodes
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.cmp(b.1))
        .map_or(0, |(i, _)| i);
    nodes.rotate_left(smallest);
    let mut found = shape(nodes);
    found.calls = found
        .edges
        .iter()
        .map(|(a, b)| pairs.calls(a, b))
        .min()
        .unwrap_or(0);
    found
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
        assert_eq!(
            loops[0].nodes.iter().map(|n| &**n).collect::<Vec<_>>(),
            ["billing", "orders", "topic"]
        );
        let pairs: Vec<(&str, &str)> = loops[0].edges.iter().map(|(a, b)| (&**a, &**b)).collect();
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

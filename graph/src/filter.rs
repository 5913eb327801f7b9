//! Asking for less, server side (issue 25): a window's graph cut down to what one question
//! needs before it is written, so that a 10,000-service system answers in kilobytes.
//!
//! The steps run in this order, each on what the one before kept; a node set is always
//! answered with every kept edge between its nodes (the induced subgraph), and a loop only
//! when all its edges are kept:
//!
//! 1. `kinds`: only nodes of these kinds;
//! 2. `min_calls`: only edges with at least this many calls, and the nodes that are an end
//!    of one of them or take at least this many calls themselves;
//! 3. `focus`: the nodes within `hops` edges of the focus, following calls downstream
//!    (`down`: what it calls), upstream (`up`: what calls it) or both (the union of the two);
//! 4. `top`: the `n` nodes ranked first by calls, errors, p99 or error rate (ties by id);
//! 5. `group_by`: the nodes that carry this attribute (services: `service.namespace`,
//!    `k8s.namespace.name`, ...) folded into one node per value, `group:<value>`, except the
//!    groups named in `expand`, whose members stay; nodes without the attribute stay as they
//!    are. A group takes its members' calls and errors (summed) and their worst p50/p95/p99
//!    and health; edges between groups add up (calls, errors, bytes, trace loops; worst
//!    latency and amplification); edges inside one group are left out, and so is a loop
//!    that no longer has an edge between two nodes of the answer;
//! 6. the cap: at most `max_nodes` nodes (the busiest, by calls) and `max_edges` edges (the
//!    busiest); `truncated` says the cap cut something.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::{FastMap, FastSet};

use crate::{Edge, Node, NodeKind, Snapshot};

/// Which way a neighbourhood follows calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What calls the node, and what calls those.
    Up,
    /// What the node calls, and what those call.
    Down,
    /// Both of the above.
    Both,
}

impl Direction {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "up" => Some(Self::Up),
            "down" => Some(Self::Down),
            "both" => Some(Self::Both),
            _ => None,
        }
    }
}

/// What `top` ranks nodes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rank {
    Calls,
    Errors,
    P99,
    ErrorRate,
}

impl Rank {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "calls" => Some(Self::Calls),
            "errors" => Some(Self::Errors),
            "p99" => Some(Self::P99),
            "error_rate" => Some(Self::ErrorRate),
            _ => None,
        }
    }

    /// The node's figure; NaN (no duration measured) ranks last.
    fn of(self, node: &Node) -> f64 {
        let figure = match self {
            Self::Calls => node.calls_in as f64,
            Self::Errors => node.errors_in as f64,
            Self::P99 => node.p99_ms,
            Self::ErrorRate if node.calls_in == 0 => 0.0,
            Self::ErrorRate => node.errors_in as f64 / node.calls_in as f64,
        };
        if figure.is_nan() {
            f64::NEG_INFINITY
        } else {
            figure
        }
    }
}

/// A neighbourhood: the node, how many edges away, which way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Focus {
    pub node: String,
    pub hops: usize,
    pub direction: Direction,
}

/// `group_by` and `expand`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupBy {
    pub key: String,
    pub expand: Vec<String>,
}

/// The id of the group of `value`.
pub fn group_id(value: &str) -> String {
    format!("group:{value}")
}

/// What to keep of a snapshot (see the module's documentation for the order).
#[derive(Debug, Clone, PartialEq)]
pub struct GraphFilter {
    pub kinds: Option<Vec<NodeKind>>,
    pub min_calls: u64,
    pub focus: Option<Focus>,
    pub top: Option<(usize, Rank)>,
    /// A node attribute to fold nodes by, and the values whose groups stay unfolded.
    pub group_by: Option<GroupBy>,
    pub max_nodes: usize,
    pub max_edges: usize,
}

/// The default cap of an answer: a dashboard draws a few thousand nodes at most.
pub const DEFAULT_MAX_NODES: usize = 5_000;
/// The default cap of an answer's edges.
pub const DEFAULT_MAX_EDGES: usize = 50_000;

impl Default for GraphFilter {
    fn default() -> Self {
        Self {
            kinds: None,
            min_calls: 0,
            focus: None,
            top: None,
            group_by: None,
            max_nodes: DEFAULT_MAX_NODES,
            max_edges: DEFAULT_MAX_EDGES,
        }
    }
}

/// A snapshot cut down by a [`GraphFilter`], with the size of the whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Filtered {
    pub snapshot: Snapshot,
    /// Nodes and edges of the whole window.
    pub total_nodes: usize,
    pub total_edges: usize,
    /// The cap cut nodes or edges the other steps kept.
    pub truncated: bool,
}

/// Why a filter cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error(
        "node `{0}` is not in this window's graph: check its id (a queue or database whose name a service also uses is `queue:<name>`, `database:<name>`), or widen the window"
    )]
    UnknownNode(String),
}

/// Applies `filter` to `snapshot` (see the module's documentation).
pub fn filter(snapshot: &Snapshot, filter: &GraphFilter) -> Result<Filtered, FilterError> {
    // Without kinds, min_calls or focus every node stays: no set of ids to look 100,000
    // edges up in (the grouped view's usual question).
    let narrowed = filter.kinds.is_some() || filter.min_calls > 0 || filter.focus.is_some();
    let mut keep: FastSet<&str> = if narrowed {
        snapshot
            .nodes
            .iter()
            .filter(|node| filter.kinds.as_ref().is_none_or(|k| k.contains(&node.kind)))
            .map(|node| node.id.as_str())
            .collect()
    } else {
        FastSet::default()
    };
    let mut edges: Vec<&Edge> = if narrowed {
        snapshot
            .edges
            .iter()
            .filter(|e| keep.contains(e.source.as_str()) && keep.contains(e.target.as_str()))
            .collect()
    } else {
        snapshot.edges.iter().collect()
    };
    if filter.min_calls > 0 {
        edges.retain(|edge| edge.calls >= filter.min_calls);
        let ends: FastSet<&str> = edges
            .iter()
            .flat_map(|e| [e.source.as_str(), e.target.as_str()])
            .collect();
        keep = snapshot
            .nodes
            .iter()
            .filter(|node| keep.contains(node.id.as_str()))
            .filter(|node| node.calls_in >= filter.min_calls || ends.contains(node.id.as_str()))
            .map(|node| node.id.as_str())
            .collect();
    }
    if let Some(focus) = &filter.focus {
        if !snapshot.nodes.iter().any(|node| node.id == focus.node) {
            return Err(FilterError::UnknownNode(focus.node.clone()));
        }
        keep = if keep.contains(focus.node.as_str()) {
            neighbourhood(&edges, &focus.node, focus.hops, focus.direction)
                .into_keys()
                .collect()
        } else {
            FastSet::default()
        };
        edges.retain(|e| keep.contains(e.source.as_str()) && keep.contains(e.target.as_str()));
    }
    let mut nodes: Vec<&Node> = if narrowed {
        snapshot
            .nodes
            .iter()
            .filter(|node| keep.contains(node.id.as_str()))
            .collect()
    } else {
        snapshot.nodes.iter().collect()
    };
    if let Some((n, rank)) = filter.top {
        nodes = first(nodes, n, |node| rank.of(node));
    }
    let grouped;
    if let Some(group_by) = &filter.group_by {
        // (The fold drops edges whose ends are not among `nodes` anyway; narrowing first
        // only spares it work.)
        if narrowed || filter.top.is_some() {
            let kept: FastSet<&str> = nodes.iter().map(|node| node.id.as_str()).collect();
            edges.retain(|e| kept.contains(e.source.as_str()) && kept.contains(e.target.as_str()));
        }
        grouped = Snapshot {
            from_ns: snapshot.from_ns,
            to_ns: snapshot.to_ns,
            ..fold_groups(&nodes, &edges, &snapshot.loops, group_by)
        };
        return Ok(cap(
            &grouped,
            filter,
            snapshot.nodes.len(),
            snapshot.edges.len(),
        ));
    }
    let mut truncated = false;
    if nodes.len() > filter.max_nodes {
        nodes = first(nodes, filter.max_nodes, |node| node.calls_in as f64);
        truncated = true;
    }
    let keep: FastSet<&str> = nodes.iter().map(|node| node.id.as_str()).collect();
    edges.retain(|e| keep.contains(e.source.as_str()) && keep.contains(e.target.as_str()));
    if edges.len() > filter.max_edges {
        let mut busiest = edges.clone();
        busiest.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| key(a).cmp(&key(b))));
        busiest.truncate(filter.max_edges);
        let kept: FastSet<_> = busiest.iter().map(|e| key(e)).collect();
        edges.retain(|e| kept.contains(&key(e)));
        truncated = true;
    }
    let kept_edges: FastSet<(&str, &str)> = edges
        .iter()
        .map(|e| (e.source.as_str(), e.target.as_str()))
        .collect();
    // Nodes and edges keep the snapshot's order (sorted), so the answer is stable.
    Ok(Filtered {
        snapshot: Snapshot {
            from_ns: snapshot.from_ns,
            to_ns: snapshot.to_ns,
            nodes: nodes.into_iter().cloned().collect(),
            edges: edges.into_iter().cloned().collect(),
            loops: snapshot
                .loops
                .iter()
                .filter(|l| {
                    l.edges
                        .iter()
                        .all(|(s, t)| kept_edges.contains(&(&**s, &**t)))
                })
                .cloned()
                .collect(),
        },
        total_nodes: snapshot.nodes.len(),
        total_edges: snapshot.edges.len(),
        truncated,
    })
}

/// The cap (the last step) of an answer already folded into groups.
fn cap(
    grouped: &Snapshot,
    filter: &GraphFilter,
    total_nodes: usize,
    total_edges: usize,
) -> Filtered {
    let plain = GraphFilter {
        max_nodes: filter.max_nodes,
        max_edges: filter.max_edges,
        ..GraphFilter::default()
    };
    match self::filter(grouped, &plain) {
        Ok(mut capped) => {
            capped.total_nodes = total_nodes;
            capped.total_edges = total_edges;
            capped
        }
        // No focus is asked of the plain filter, so nothing is unknown.
        Err(_) => Filtered {
            snapshot: grouped.clone(),
            total_nodes,
            total_edges,
            truncated: false,
        },
    }
}

/// Folds `nodes` by the value of `group_by.key` (see the module's documentation, step 5).
fn fold_groups(
    nodes: &[&Node],
    edges: &[&Edge],
    loops: &[crate::FeedbackLoop],
    group_by: &GroupBy,
) -> Snapshot {
    use std::collections::BTreeMap;
    // Each node's id in the answer.
    // Each node's id in the answer, one allocation per distinct id (a group's is shared by
    // its members), so two ends fold to the same id exactly when they are the same `Arc`:
    // the loops below compare and hash hundreds of thousands of them by address.
    let mut interned: FastMap<String, Arc<str>> = FastMap::default();
    let mut intern = |id: String| -> Arc<str> {
        interned
            .entry(id)
            .or_insert_with_key(|id| Arc::from(id.as_str()))
            .clone()
    };
    let mut id_of: FastMap<&str, Arc<str>> = FastMap::default();
    let mut groups: BTreeMap<String, Vec<&Node>> = BTreeMap::new();
    let mut answer: Vec<Node> = Vec::new();
    let expand: FastSet<&str> = group_by.expand.iter().map(String::as_str).collect();
    for node in nodes {
        match node.attributes.get(&group_by.key) {
            Some(value) if !expand.contains(value.as_str()) => {
                id_of.insert(node.id.as_str(), intern(group_id(value)));
                groups.entry(value.clone()).or_default().push(node);
            }
            _ => {
                id_of.insert(node.id.as_str(), intern(node.id.clone()));
                answer.push((*node).clone());
            }
        }
    }
    for (value, members) in groups {
        let worst = |figure: fn(&Node) -> f64| {
            members
                .iter()
                .map(|m| figure(m))
                .filter(|f| !f.is_nan())
                .fold(0.0f64, f64::max)
        };
        let level = members
            .iter()
            .map(|m| m.health.level)
            .max()
            .unwrap_or_default();
        let reasons = members
            .iter()
            .filter(|m| m.health.level == level && level != crate::HealthLevel::default())
            .flat_map(|m| {
                m.health
                    .reasons
                    .iter()
                    .map(move |r| format!("{}: {r}", m.id))
            })
            .take(5)
            .collect();
        let mut ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        ids.sort();
        answer.push(Node {
            id: group_id(&value),
            kind: NodeKind::Group,
            calls_in: members.iter().map(|m| m.calls_in).sum(),
            errors_in: members.iter().map(|m| m.errors_in).sum(),
            p50_ms: worst(|m| m.p50_ms),
            p95_ms: worst(|m| m.p95_ms),
            p99_ms: worst(|m| m.p99_ms),
            health: crate::Health { level, reasons },
            attributes: std::sync::Arc::new(
                [(group_by.key.clone(), value.clone())]
                    .into_iter()
                    .collect(),
            ),
            group: Some(crate::types::NodeGroup {
                key: group_by.key.clone(),
                value,
                members: ids,
            }),
        });
    }
    answer.sort_by(|a, b| a.id.cmp(&b.id));
    // Keys borrow the answer's ids from `id_of`: no copy of two strings per edge of a
    // 100,000-edge graph to find where it folds.
    let mut folded: FastMap<(&str, &str, crate::EdgeKind), Edge> = FastMap::default();
    for edge in edges {
        let (Some(source), Some(target)) = (
            id_of.get(edge.source.as_str()),
            id_of.get(edge.target.as_str()),
        ) else {
            continue;
        };
        if Arc::ptr_eq(source, target) && **source != *edge.source {
            continue;
        }
        match folded.entry((&**source, &**target, edge.kind)) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                let mut first = (*edge).clone();
                first.source = source.to_string();
                first.target = target.to_string();
                slot.insert(first);
            }
            std::collections::hash_map::Entry::Occupied(mut slot) => {
                let sum = slot.get_mut();
                sum.calls += edge.calls;
                sum.errors += edge.errors;
                sum.bytes += edge.bytes;
                sum.trace_loops += edge.trace_loops;
                sum.p50_ms = sum.p50_ms.max(edge.p50_ms);
                sum.p95_ms = sum.p95_ms.max(edge.p95_ms);
                sum.p99_ms = sum.p99_ms.max(edge.p99_ms);
                sum.amplification = sum.amplification.max(edge.amplification);
                sum.amplified |= edge.amplified;
                if edge.health.level > sum.health.level {
                    sum.health = edge.health.clone();
                }
            }
        }
    }
    let pairs: FastSet<(&str, &str)> = folded.keys().map(|(s, t, _)| (*s, *t)).collect();
    let folded_loops = loops
        .iter()
        .filter_map(|l| {
            // Each node's answer id, looked up once: a loop's edges are its nodes in turn
            // (checked by address), so an edge's ends are found by position.
            let mapped: Vec<Option<&Arc<str>>> = l.nodes.iter().map(|n| id_of.get(&**n)).collect();
            let count = l.nodes.len();
            let in_turn = l.edges.len() == count;
            // The loop's edges in the answer's ids, each once, in the loop's order.
            let mut loop_edges: Vec<(&Arc<str>, &Arc<str>)> = Vec::new();
            let mut seen_edges: FastSet<(usize, usize)> = FastSet::default();
            for (at, (s, t)) in l.edges.iter().enumerate() {
                let by_position = in_turn
                    && Arc::ptr_eq(s, &l.nodes[at])
                    && Arc::ptr_eq(t, &l.nodes[(at + 1) % count]);
                let ends = if by_position {
                    (mapped[at], mapped[(at + 1) % count])
                } else {
                    (id_of.get(&**s), id_of.get(&**t))
                };
                let (Some(s2), Some(t2)) = ends else {
                    return None;
                };
                if Arc::ptr_eq(s2, t2) && **s2 != **s {
                    continue;
                }
                let key = (
                    Arc::as_ptr(s2).cast::<u8>() as usize,
                    Arc::as_ptr(t2).cast::<u8>() as usize,
                );
                if seen_edges.insert(key) {
                    loop_edges.push((s2, t2));
                }
            }
            if loop_edges.is_empty()
                || !loop_edges
                    .iter()
                    .all(|(s2, t2)| pairs.contains(&(&***s2, &***t2)))
            {
                return None;
            }
            let mut seen = FastSet::default();
            let nodes: Vec<Arc<str>> = mapped
                .into_iter()
                .flatten()
                .filter(|n| seen.insert(Arc::as_ptr(n).cast::<u8>() as usize))
                .cloned()
                .collect();
            Some(crate::FeedbackLoop {
                id: l.id.clone(),
                nodes: nodes.into(),
                edges: loop_edges
                    .into_iter()
                    .map(|(s, t)| (s.clone(), t.clone()))
                    .collect(),
                calls: l.calls,
                trace_loops: l.trace_loops,
            })
        })
        .collect::<Vec<_>>();
    // Loops that fold to the same edges are one loop of the answer: the busiest one's
    // figures, under the id of its folded nodes.
    let mut by_edges: BTreeMap<LoopEdges, crate::FeedbackLoop> = BTreeMap::new();
    for mut l in folded_loops {
        let mut key = l.edges.to_vec();
        key.sort();
        l.id = l.nodes.join(" -> ").into();
        match by_edges.entry(key) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(l);
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                let kept = slot.get_mut();
                kept.trace_loops = kept.trace_loops.max(l.trace_loops);
                if l.calls > kept.calls {
                    kept.calls = l.calls;
                }
            }
        }
    }
    let folded_loops: Vec<crate::FeedbackLoop> = by_edges.into_values().collect();
    let mut folded_edges: Vec<Edge> = folded.into_values().collect();
    folded_edges.sort_by(|a, b| a.key().cmp(&b.key()));
    Snapshot {
        from_ns: 0,
        to_ns: 0,
        nodes: answer,
        edges: folded_edges,
        loops: folded_loops,
    }
}

/// A folded loop's edges, sorted: loops that fold to the same edges are one.
type LoopEdges = Vec<(Arc<str>, Arc<str>)>;

fn key(edge: &Edge) -> (&str, &str, crate::EdgeKind) {
    (edge.source.as_str(), edge.target.as_str(), edge.kind)
}

/// The `n` nodes ranked first by `figure` (highest first, ties by id), in their order.
fn first(nodes: Vec<&Node>, n: usize, figure: impl Fn(&Node) -> f64) -> Vec<&Node> {
    if nodes.len() <= n {
        return nodes;
    }
    let mut ranked = nodes.clone();
    ranked.sort_by(|a, b| {
        figure(b)
            .partial_cmp(&figure(a))
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.id.cmp(&b.id))
    });
    let chosen: FastSet<&str> = ranked.iter().take(n).map(|node| node.id.as_str()).collect();
    nodes
        .into_iter()
        .filter(|node| chosen.contains(node.id.as_str()))
        .collect()
}

/// Every node within `hops` edges of `from` along `direction`, with its distance (the
/// union of both ways for [`Direction::Both`], at the shorter distance).
pub(crate) fn neighbourhood<'a>(
    edges: &[&'a Edge],
    from: &'a str,
    hops: usize,
    direction: Direction,
) -> FastMap<&'a str, usize> {
    let mut reached = FastMap::from_iter([(from, 0)]);
    for way in [Direction::Down, Direction::Up] {
        if direction != Direction::Both && direction != way {
            continue;
        }
        let mut next: FastMap<&str, Vec<&str>> = FastMap::default();
        for edge in edges {
            let (a, b) = match way {
                Direction::Up => (edge.target.as_str(), edge.source.as_str()),
                _ => (edge.source.as_str(), edge.target.as_str()),
            };
            next.entry(a).or_default().push(b);
        }
        let mut seen = FastMap::from_iter([(from, 0usize)]);
        let mut queue = VecDeque::from([from]);
        while let Some(node) = queue.pop_front() {
            let distance = seen[node];
            if distance == hops {
                continue;
            }
            for &to in next.get(node).map_or(&[][..], Vec::as_slice) {
                if !seen.contains_key(to) {
                    seen.insert(to, distance + 1);
                    queue.push_back(to);
                }
            }
        }
        for (node, distance) in seen {
            let slot = reached.entry(node).or_insert(distance);
            *slot = (*slot).min(distance);
        }
    }
    reached
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EdgeKind, FeedbackLoop, Health};
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn node(id: usize, kind: NodeKind, calls: u64, errors: u64, p99: f64) -> Node {
        Node {
            id: format!("n{id:02}"),
            kind,
            calls_in: calls,
            errors_in: errors.min(calls),
            p50_ms: 0.0,
            p95_ms: 0.0,
            p99_ms: p99,
            health: Health::default(),
            attributes: Default::default(),
            group: None,
        }
    }

    fn edge(source: usize, target: usize, kind: EdgeKind, calls: u64) -> Edge {
        Edge {
            source: format!("n{source:02}"),
            target: format!("n{target:02}"),
            kind,
            calls,
            errors: 0,
            p50_ms: 0.0,
            p95_ms: 0.0,
            p99_ms: 0.0,
            bytes: 0,
            amplification: 1.0,
            trace_loops: 0,
            health: Health::default(),
            amplified: false,
        }
    }

    const KINDS: [NodeKind; 4] = [
        NodeKind::Service,
        NodeKind::Database,
        NodeKind::Queue,
        NodeKind::External,
    ];

    fn graphs() -> impl Strategy<Value = Snapshot> {
        (2usize..14).prop_flat_map(|n| {
            (
                prop::collection::vec(
                    (
                        0usize..4,
                        0u64..50,
                        0u64..10,
                        prop::option::of(0.0..500.0f64),
                    ),
                    n,
                ),
                prop::collection::vec((0..n, 0..n, any::<bool>(), 1u64..60), 0..3 * n),
            )
                .prop_map(move |(nodes, edges)| {
                    let nodes: Vec<Node> = nodes
                        .into_iter()
                        .enumerate()
                        .map(|(i, (k, calls, errors, p99))| {
                            node(i, KINDS[k], calls, errors, p99.unwrap_or(f64::NAN))
                        })
                        .collect();
                    let mut edges: Vec<Edge> = edges
                        .into_iter()
                        .map(|(s, t, sync, calls)| {
                            let kind = if sync {
                                EdgeKind::Sync
                            } else {
                                EdgeKind::Async
                            };
                            edge(s, t, kind, calls)
                        })
                        .collect();
                    edges.sort_by(|a, b| key(a).cmp(&key(b)));
                    edges.dedup_by(|a, b| key(a) == key(b));
                    // Every 2-cycle is a loop, as the loop search would report it.
                    let mut loops = Vec::new();
                    for e in &edges {
                        if e.source < e.target
                            && edges
                                .iter()
                                .any(|f| f.source == e.target && f.target == e.source)
                        {
                            loops.push(FeedbackLoop {
                                id: format!("{} -> {}", e.source, e.target).into(),
                                nodes: vec![
                                    Arc::from(e.source.as_str()),
                                    Arc::from(e.target.as_str()),
                                ]
                                .into(),
                                edges: vec![
                                    (Arc::from(e.source.as_str()), Arc::from(e.target.as_str())),
                                    (Arc::from(e.target.as_str()), Arc::from(e.source.as_str())),
                                ]
                                .into(),
                                calls: e.calls,
                                trace_loops: 0,
                            });
                        }
                    }
                    Snapshot {
                        from_ns: 0,
                        to_ns: 1,
                        nodes,
                        edges,
                        loops,
                    }
                })
        })
    }

    fn filters(n: usize) -> impl Strategy<Value = GraphFilter> {
        (
            prop::option::of(prop::collection::vec(0usize..4, 1..3)),
            prop_oneof![Just(0u64), 1u64..40],
            prop::option::of((0..n.max(1) + 2, 0usize..4, 0usize..3)),
            prop::option::of((1usize..10, 0usize..4)),
            1usize..16,
            1usize..40,
        )
            .prop_map(
                |(kinds, min_calls, focus, top, max_nodes, max_edges)| GraphFilter {
                    kinds: kinds.map(|k| k.into_iter().map(|k| KINDS[k]).collect()),
                    min_calls,
                    focus: focus.map(|(node, hops, direction)| Focus {
                        node: format!("n{node:02}"),
                        hops,
                        direction: [Direction::Up, Direction::Down, Direction::Both][direction],
                    }),
                    top: top.map(|(n, rank)| {
                        (
                            n,
                            [Rank::Calls, Rank::Errors, Rank::P99, Rank::ErrorRate][rank],
                        )
                    }),
                    group_by: None,
                    max_nodes,
                    max_edges,
                },
            )
    }

    /// The filter worked out by hand: sets and fixed points, no adjacency lists.
    fn by_hand(snapshot: &Snapshot, f: &GraphFilter) -> Option<(Vec<String>, Vec<Edge>, usize)> {
        let mut nodes: Vec<&Node> = snapshot
            .nodes
            .iter()
            .filter(|n| f.kinds.as_ref().is_none_or(|k| k.contains(&n.kind)))
            .collect();
        let induced = |nodes: &[&Node], edges: &[Edge]| -> Vec<Edge> {
            edges
                .iter()
                .filter(|e| {
                    nodes.iter().any(|n| n.id == e.source) && nodes.iter().any(|n| n.id == e.target)
                })
                .cloned()
                .collect()
        };
        let mut edges = induced(&nodes, &snapshot.edges);
        if f.min_calls > 0 {
            edges.retain(|e| e.calls >= f.min_calls);
            nodes.retain(|n| {
                n.calls_in >= f.min_calls
                    || edges.iter().any(|e| e.source == n.id || e.target == n.id)
            });
        }
        if let Some(focus) = &f.focus {
            if !snapshot.nodes.iter().any(|n| n.id == focus.node) {
                return None;
            }
            // Distances by relaxation until nothing changes.
            let walk = |down: bool| {
                let mut distance: HashMap<String, usize> = HashMap::new();
                if nodes.iter().any(|n| n.id == focus.node) {
                    distance.insert(focus.node.clone(), 0);
                }
                loop {
                    let mut changed = false;
                    for e in &edges {
                        let (a, b) = if down {
                            (&e.source, &e.target)
                        } else {
                            (&e.target, &e.source)
                        };
                        if let Some(&d) = distance.get(a)
                            && d < focus.hops
                            && distance.get(b).is_none_or(|&old| old > d + 1)
                        {
                            distance.insert(b.clone(), d + 1);
                            changed = true;
                        }
                    }
                    if !changed {
                        return distance;
                    }
                }
            };
            let mut reached: HashSet<String> = HashSet::new();
            if focus.direction != Direction::Up {
                reached.extend(walk(true).into_keys());
            }
            if focus.direction != Direction::Down {
                reached.extend(walk(false).into_keys());
            }
            nodes.retain(|n| reached.contains(&n.id));
            edges = induced(&nodes, &edges);
        }
        let rank = |nodes: &mut Vec<&Node>, n: usize, by: &dyn Fn(&Node) -> f64| {
            let mut sorted = nodes.clone();
            sorted.sort_by(|a, b| {
                by(b)
                    .partial_cmp(&by(a))
                    .unwrap()
                    .then_with(|| a.id.cmp(&b.id))
            });
            sorted.truncate(n);
            nodes.retain(|x| sorted.iter().any(|y| y.id == x.id));
        };
        if let Some((n, by)) = f.top {
            rank(&mut nodes, n, &|node| by.of(node));
        }
        let cut_nodes = nodes.len() > f.max_nodes;
        rank(&mut nodes, f.max_nodes, &|node| node.calls_in as f64);
        let mut edges = induced(&nodes, &edges);
        let cut_edges = edges.len() > f.max_edges;
        let mut busiest = edges.clone();
        busiest.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| key(a).cmp(&key(b))));
        busiest.truncate(f.max_edges);
        edges.retain(|e| busiest.contains(e));
        Some((
            nodes.iter().map(|n| n.id.clone()).collect(),
            edges,
            usize::from(cut_nodes || cut_edges),
        ))
    }

    proptest! {
        #[test]
        fn every_filter_keeps_what_the_whole_graph_filtered_by_hand_keeps(
            (snapshot, f) in graphs().prop_flat_map(|s| { let n = s.nodes.len(); (Just(s), filters(n)) })
        ) {
            let got = filter(&snapshot, &f);
            match by_hand(&snapshot, &f) {
                None => prop_assert!(matches!(got, Err(FilterError::UnknownNode(_)))),
                Some((nodes, edges, truncated)) => {
                    let got = got.unwrap();
                    let ids: Vec<String> = got.snapshot.nodes.iter().map(|n| n.id.clone()).collect();
                    prop_assert_eq!(ids, nodes);
                    prop_assert_eq!(&got.snapshot.edges, &edges);
                    prop_assert_eq!(usize::from(got.truncated), truncated);
                    prop_assert_eq!(got.total_nodes, snapshot.nodes.len());
                    for l in &got.snapshot.loops {
                        for (s, t) in l.edges.iter() {
                            prop_assert!(edges.iter().any(|e| e.source.as_str() == &**s && e.target.as_str() == &**t));
                        }
                    }
                    let expected_loops = snapshot.loops.iter().filter(|l| {
                        l.edges.iter().all(|(s, t)| edges.iter().any(|e| e.source.as_str() == &**s && e.target.as_str() == &**t))
                    }).count();
                    prop_assert_eq!(got.snapshot.loops.len(), expected_loops);
                }
            }
        }
    }

    proptest! {
        /// Grouping loses no traffic: each group holds exactly the nodes of its value and
        /// their calls; every edge not inside one folded group is in the answer, summed by
        /// the ends it folds to; expanded groups and nodes without the value stay as they are.
        #[test]
        fn groups_hold_their_members_and_every_call_between_them(
            snapshot in graphs(),
            values in prop::collection::vec(prop::option::of(0usize..3), 14),
            expand in prop::option::of(0usize..3),
        ) {
            let mut snapshot = snapshot;
            let key = "service.namespace";
            for (node, value) in snapshot.nodes.iter_mut().zip(&values) {
                if let Some(v) = value {
                    node.attributes = std::sync::Arc::new(
                        [(key.to_string(), format!("ns{v}"))].into_iter().collect(),
                    );
                }
            }
            let expand: Vec<String> = expand.map(|v| format!("ns{v}")).into_iter().collect();
            let f = GraphFilter {
                group_by: Some(GroupBy { key: key.into(), expand: expand.clone() }),
                ..GraphFilter::default()
            };
            let got = filter(&snapshot, &f).unwrap().snapshot;
            // By hand: where each node goes.
            let to = |id: &str| -> String {
                let node = snapshot.nodes.iter().find(|n| n.id == id).unwrap();
                match node.attributes.get(key) {
                    Some(v) if !expand.contains(v) => format!("group:{v}"),
                    _ => id.to_string(),
                }
            };
            let mut expected_nodes: Vec<String> =
                snapshot.nodes.iter().map(|n| to(&n.id)).collect();
            expected_nodes.sort();
            expected_nodes.dedup();
            let ids: Vec<String> = got.nodes.iter().map(|n| n.id.clone()).collect();
            prop_assert_eq!(&ids, &expected_nodes);
            for node in &got.nodes {
                let members: Vec<&Node> =
                    snapshot.nodes.iter().filter(|n| to(&n.id) == node.id).collect();
                prop_assert_eq!(node.calls_in, members.iter().map(|m| m.calls_in).sum::<u64>());
                prop_assert_eq!(node.errors_in, members.iter().map(|m| m.errors_in).sum::<u64>());
                match &node.group {
                    Some(group) => {
                        prop_assert_eq!(node.kind, NodeKind::Group);
                        let mut ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
                        ids.sort();
                        prop_assert_eq!(&group.members, &ids);
                    }
                    None => prop_assert_eq!(members.len(), 1),
                }
            }
            let mut expected: HashMap<(String, String, EdgeKind), u64> = HashMap::new();
            for e in &snapshot.edges {
                let (s, t) = (to(&e.source), to(&e.target));
                if s == t && s.starts_with("group:") {
                    continue;
                }
                *expected.entry((s, t, e.kind)).or_default() += e.calls;
            }
            let got_edges: HashMap<(String, String, EdgeKind), u64> = got
                .edges
                .iter()
                .map(|e| ((e.source.clone(), e.target.clone(), e.kind), e.calls))
                .collect();
            prop_assert_eq!(got_edges, expected);
            let mut edge_sets = HashSet::new();
            for l in &got.loops {
                for (s, t) in l.edges.iter() {
                    prop_assert!(got.edges.iter().any(|e| e.source.as_str() == &**s && e.target.as_str() == &**t));
                }
                let mut set = l.edges.to_vec();
                set.sort();
                prop_assert!(edge_sets.insert(set), "loops that fold alike are one: {:?}", got.loops);
            }
        }
    }

    #[test]
    fn a_neighbourhood_follows_calls_the_way_asked() {
        let edges = [
            edge(0, 1, EdgeKind::Sync, 5),
            edge(1, 2, EdgeKind::Sync, 5),
            edge(2, 3, EdgeKind::Async, 5),
            edge(4, 1, EdgeKind::Sync, 5),
        ];
        let refs: Vec<&Edge> = edges.iter().collect();
        let down = neighbourhood(&refs, "n01", 2, Direction::Down);
        assert_eq!(down.len(), 3, "{down:?}");
        assert_eq!(down["n03"], 2);
        let up = neighbourhood(&refs, "n01", 5, Direction::Up);
        assert_eq!(up.len(), 3, "{up:?}");
        let both = neighbourhood(&refs, "n01", 1, Direction::Both);
        assert_eq!(both.len(), 4, "n0, n2, n4 and n1 itself: {both:?}");
    }
}

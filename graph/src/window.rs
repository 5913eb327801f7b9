//! Statistics per time bucket (calls, errors, latency sketches, bytes, amplification and
//! per-trace loops), and the merge of a window's buckets into a [`Snapshot`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::FastMap;
use crate::filter::{Direction, Focus};
use crate::loops::{Pairs, loop_of_cycle, loops_of};
use crate::sketch::LatencySketch;
use crate::types::{Edge, EdgeKind, FeedbackLoop, Health, Node, NodeKind, Snapshot};

/// A node before display names are chosen: a queue and a service may share a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeKey {
    pub kind: NodeKind,
    pub name: Arc<str>,
}

impl NodeKey {
    pub fn service(name: &Arc<str>) -> Self {
        Self {
            kind: NodeKind::Service,
            name: name.clone(),
        }
    }

    pub fn queue(name: &Arc<str>) -> Self {
        Self {
            kind: NodeKind::Queue,
            name: name.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct EdgeKey {
    pub source: NodeKey,
    pub target: NodeKey,
    pub kind: EdgeKind,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EdgeStats {
    pub calls: u64,
    pub errors: u64,
    pub latency: LatencySketch,
    pub bytes: u64,
    /// Calls made by callers whose trace was finalized, and the number of those callers:
    /// `amplified_calls / callers` is the amplification.
    pub amplified_calls: u64,
    pub callers: u64,
}

impl EdgeStats {
    fn merge(&mut self, other: &EdgeStats) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
        self.bytes += other.bytes;
        self.amplified_calls += other.amplified_calls;
        self.callers += other.callers;
    }

    fn subtract(&mut self, other: &EdgeStats) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.errors = self.errors.saturating_sub(other.errors);
        self.latency.subtract(&other.latency);
        self.bytes = self.bytes.saturating_sub(other.bytes);
        self.amplified_calls = self.amplified_calls.saturating_sub(other.amplified_calls);
        self.callers = self.callers.saturating_sub(other.callers);
    }
}

/// A service's own SERVER and CONSUMER spans. Any span of the service creates the entry,
/// so a service with only INTERNAL or CLIENT spans still appears.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct NodeStats {
    pub calls_in: u64,
    pub errors_in: u64,
    pub latency: LatencySketch,
}

impl NodeStats {
    fn merge(&mut self, other: &NodeStats) {
        self.calls_in += other.calls_in;
        self.errors_in += other.errors_in;
        self.latency.merge(&other.latency);
    }

    fn subtract(&mut self, other: &NodeStats) {
        self.calls_in = self.calls_in.saturating_sub(other.calls_in);
        self.errors_in = self.errors_in.saturating_sub(other.errors_in);
        self.latency.subtract(&other.latency);
    }
}

/// A merged figure and the number of buckets it was merged from: a bucket taken away
/// ([`WindowStats::remove`]) removes the entry with the last of them, so the entries are
/// exactly those a fresh merge of the remaining buckets would have.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Counted<T> {
    pub value: T,
    members: u32,
}

/// Where a merged sketch's range lies: the buckets that hold the entry's own sketch.
fn range_of<'a>(sketches: impl Iterator<Item = &'a LatencySketch>) -> Option<(i64, i64)> {
    sketches
        .filter_map(LatencySketch::range)
        .reduce(|(min, max), (lo, hi)| (min.min(lo), max.max(hi)))
}

/// Figures that a window merges and can take away again, with their latency sketch.
trait Subtractable {
    fn subtract(&mut self, other: &Self);
    fn latency(&self) -> &LatencySketch;
    fn latency_mut(&mut self) -> &mut LatencySketch;
}

impl Subtractable for EdgeStats {
    fn subtract(&mut self, other: &Self) {
        EdgeStats::subtract(self, other);
    }
    fn latency(&self) -> &LatencySketch {
        &self.latency
    }
    fn latency_mut(&mut self) -> &mut LatencySketch {
        &mut self.latency
    }
}

impl Subtractable for NodeStats {
    fn subtract(&mut self, other: &Self) {
        NodeStats::subtract(self, other);
    }
    fn latency(&self) -> &LatencySketch {
        &self.latency
    }
    fn latency_mut(&mut self) -> &mut LatencySketch {
        &mut self.latency
    }
}

/// Takes a bucket's entries (`removed`) away from the merged `map`; `entries_of` finds the
/// same table in another bucket. An entry goes with the last bucket that had it. When a
/// removed entry held an end of the merged range, the range is found again from the `kept`
/// buckets' own sketches, unless a successor (the same bucket grown by new spans, which is
/// added next) holds that same end: then the range stays, and adding the successor leaves it
/// exact. Either way, once the successors are added, the result equals a fresh merge.
fn take_away<K: Ord + Eq + std::hash::Hash, T: Subtractable>(
    map: &mut BTreeMap<K, Counted<T>>,
    removed: &FastMap<K, T>,
    kept: &[&Bucket],
    successors: &[&Bucket],
    entries_of: impl Fn(&Bucket) -> &FastMap<K, T>,
) {
    for (key, stats) in removed {
        let Some(entry) = map.get_mut(key) else {
            continue;
        };
        entry.members = entry.members.saturating_sub(1);
        if entry.members == 0 {
            map.remove(key);
            continue;
        }
        let ends = match (stats.latency().range(), entry.value.latency().range()) {
            (Some((lo, hi)), Some((min, max))) if lo == min || hi == max => {
                Some((lo == min, hi == max, min, max))
            }
            _ => None,
        };
        entry.value.subtract(stats);
        let Some((min_gone, max_gone, min, max)) = ends else {
            continue;
        };
        let sketches = |buckets: &[&Bucket]| {
            range_of(
                buckets
                    .iter()
                    .filter_map(|b| entries_of(b).get(key).map(Subtractable::latency)),
            )
        };
        let held_by_successor = sketches(successors)
            .is_some_and(|(lo, hi)| (!min_gone || lo == min) && (!max_gone || hi == max));
        if held_by_successor {
            continue;
        }
        if let Some((min, max)) = sketches(kept) {
            entry.value.latency_mut().set_range(min, max);
        }
    }
}

/// A cycle of nodes, distinct, rotated to start at its smallest key.
pub(crate) type Cycle = Vec<NodeKey>;

#[derive(Debug, Default, Clone)]
pub(crate) struct Bucket {
    pub edges: FastMap<EdgeKey, EdgeStats>,
    pub services: FastMap<Arc<str>, NodeStats>,
    /// Traces that went round a cycle, by cycle.
    pub trace_loops: HashMap<Cycle, u64>,
}

impl Bucket {
    /// Rough heap size: hash table slots (with their slack) and sketch bins.
    pub fn heap_bytes(&self) -> usize {
        let slots = self.edges.capacity() * (std::mem::size_of::<(EdgeKey, EdgeStats)>() + 1)
            + self.services.capacity() * (std::mem::size_of::<(Arc<str>, NodeStats)>() + 1);
        let bins: usize = self
            .edges
            .values()
            .map(|s| s.latency.heap_bytes())
            .sum::<usize>()
            + self
                .services
                .values()
                .map(|s| s.latency.heap_bytes())
                .sum::<usize>();
        slots + bins
    }
}

/// The buckets of one window, merged. Buckets can also be taken away again
/// ([`WindowStats::remove`]), so a window that slides by a bucket, or whose newest buckets
/// changed, is brought up to date at the cost of what changed (`MergedWindow` in live.rs).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct WindowStats {
    edges: BTreeMap<EdgeKey, Counted<EdgeStats>>,
    services: BTreeMap<Arc<str>, Counted<NodeStats>>,
    trace_loops: BTreeMap<Cycle, Counted<u64>>,
}

impl WindowStats {
    pub fn add(&mut self, bucket: &Bucket) {
        for (key, stats) in &bucket.edges {
            let entry = self.edges.entry(key.clone()).or_default();
            entry.value.merge(stats);
            entry.members += 1;
        }
        for (name, stats) in &bucket.services {
            let entry = self.services.entry(name.clone()).or_default();
            entry.value.merge(stats);
            entry.members += 1;
        }
        for (cycle, count) in &bucket.trace_loops {
            let entry = self.trace_loops.entry(cycle.clone()).or_default();
            entry.value += count;
            entry.members += 1;
        }
    }

    /// Takes away a bucket [`WindowStats::add`] added; `kept` are the buckets that stay
    /// merged (where the ranges of latency sketches are found again when the removed bucket
    /// held one of their ends), `successors` those that replace it and are added next.
    pub fn remove(&mut self, bucket: &Bucket, kept: &[&Bucket], successors: &[&Bucket]) {
        take_away(&mut self.edges, &bucket.edges, kept, successors, |b| {
            &b.edges
        });
        take_away(
            &mut self.services,
            &bucket.services,
            kept,
            successors,
            |b| &b.services,
        );
        for (cycle, count) in &bucket.trace_loops {
            let Some(entry) = self.trace_loops.get_mut(cycle) else {
                continue;
            };
            entry.members = entry.members.saturating_sub(1);
            entry.value = entry.value.saturating_sub(*count);
            if entry.members == 0 {
                self.trace_loops.remove(cycle);
            }
        }
    }

    pub fn into_snapshot(self, from_ns: i64, to_ns: i64) -> Snapshot {
        self.snapshot(from_ns, to_ns)
    }

    /// [`WindowStats::into_snapshot`] keeping the merged figures.
    pub fn snapshot(&self, from_ns: i64, to_ns: i64) -> Snapshot {
        let (mut snapshot, names) = self.figures(from_ns, to_ns);
        let pairs = Pairs::of_calls(
            snapshot
                .edges
                .iter()
                .map(|e| (e.source.as_str(), e.target.as_str(), e.calls)),
        );
        let (loops, counted) = trace_loops_on(loops_of(&pairs), &pairs, &self.trace_loops, &names);
        attach(&mut snapshot, loops, counted);
        snapshot
    }

    /// The part of the window's snapshot that a neighbourhood of `focus` needs: every node
    /// within its hops (following calls down, up or both, as [`crate::filter`] does, over
    /// all of the window's edges), every edge that touches one of them, with their ends, and
    /// every loop of the window. Filtering it by a filter with that focus gives what
    /// filtering the whole snapshot gives (a node's health is judged from its own figures and
    /// the calls it makes, which are all here), at the cost of the neighbourhood, not of
    /// naming and figuring every edge. `None` when no node of the window has that id.
    pub fn around(&self, from_ns: i64, to_ns: i64, focus: &Focus) -> Option<Around> {
        let names = self.names();
        let start = names.ids.iter().position(|id| *id == focus.node)?;
        let count = names.keys.len();
        let ends = names.ends(&self.edges);
        let mut inside = vec![false; count];
        inside[start] = true;
        for way in [Direction::Down, Direction::Up] {
            if focus.direction != Direction::Both && focus.direction != way {
                continue;
            }
            let mut next: Vec<Vec<usize>> = vec![Vec::new(); count];
            for &(source, target) in &ends {
                match way {
                    Direction::Up => next[target].push(source),
                    _ => next[source].push(target),
                }
            }
            let mut distance: Vec<Option<usize>> = vec![None; count];
            distance[start] = Some(0);
            let mut queue = std::collections::VecDeque::from([start]);
            while let Some(node) = queue.pop_front() {
                let Some(at) = distance[node] else { continue };
                if at == focus.hops {
                    continue;
                }
                for &to in &next[node] {
                    if distance[to].is_none() {
                        distance[to] = Some(at + 1);
                        inside[to] = true;
                        queue.push_back(to);
                    }
                }
            }
        }
        let mut snapshot = self.figures_with(&names, &ends, from_ns, to_ns, Some(&inside));
        // The window's loops need all of its pairs (their ids only, no figures).
        let pairs = Pairs::of_calls(self.edges.values().zip(&ends).map(
            |(counted, (source, target))| {
                (
                    names.ids[*source].as_str(),
                    names.ids[*target].as_str(),
                    counted.value.calls,
                )
            },
        ));
        let (loops, counted) = trace_loops_on(loops_of(&pairs), &pairs, &self.trace_loops, &names);
        attach(&mut snapshot, loops, counted);
        Some(Around {
            snapshot,
            total_nodes: count,
            total_edges: self.edges.len(),
        })
    }

    /// The snapshot without its loops (finding them is the costly part on a big graph), for
    /// readers that need only the figures, such as a health baseline.
    pub fn into_figures(self, from_ns: i64, to_ns: i64) -> Snapshot {
        self.figures(from_ns, to_ns).0
    }

    /// [`WindowStats::into_figures`] keeping the merged figures.
    pub fn figures_only(&self, from_ns: i64, to_ns: i64) -> Snapshot {
        self.figures(from_ns, to_ns).0
    }

    fn names(&self) -> DisplayNames {
        let services: Vec<NodeKey> = self.services.keys().map(NodeKey::service).collect();
        DisplayNames::new(
            services
                .iter()
                .chain(self.edges.keys().flat_map(|e| [&e.source, &e.target]))
                .chain(self.trace_loops.keys().flatten()),
        )
    }

    fn figures(&self, from_ns: i64, to_ns: i64) -> (Snapshot, DisplayNames) {
        let names = self.names();
        let ends = names.ends(&self.edges);
        let snapshot = self.figures_with(&names, &ends, from_ns, to_ns, None);
        (snapshot, names)
    }

    /// The figures of every node and edge, or with `inside` (by place among the distinct
    /// keys) of the edges that touch a node inside and of their ends.
    fn figures_with(
        &self,
        names: &DisplayNames,
        ends: &[(usize, usize)],
        from_ns: i64,
        to_ns: i64,
        inside: Option<&[bool]>,
    ) -> Snapshot {
        let mut shown: Vec<bool> = inside.map_or_else(Vec::new, <[bool]>::to_vec);
        let id = |at: usize| names.ids.get(at).cloned().unwrap_or_default();
        let mut edges: Vec<Edge> = self
            .edges
            .iter()
            .zip(ends)
            .filter(|(_, (source, target))| {
                let Some(inside) = inside else {
                    return true;
                };
                let touches = inside[*source] || inside[*target];
                if touches {
                    shown[*source] = true;
                    shown[*target] = true;
                }
                touches
            })
            .map(
                |((key, Counted { value: stats, .. }), (source, target))| Edge {
                    source: id(*source),
                    target: id(*target),
                    kind: key.kind,
                    calls: stats.calls,
                    errors: stats.errors,
                    p50_ms: stats.latency.quantile_ms(0.50),
                    p95_ms: stats.latency.quantile_ms(0.95),
                    p99_ms: stats.latency.quantile_ms(0.99),
                    bytes: stats.bytes,
                    amplification: if stats.callers == 0 {
                        0.0
                    } else {
                        stats.amplified_calls as f64 / stats.callers as f64
                    },
                    trace_loops: 0,
                    health: Health::default(),
                    amplified: false,
                },
            )
            .collect();
        edges.sort_by(|a, b| a.key().cmp(&b.key()));

        let mut incoming: Vec<(u64, u64)> = vec![(0, 0); names.keys.len()];
        for (Counted { value: stats, .. }, (_, target)) in self.edges.values().zip(ends) {
            incoming[*target].0 += stats.calls;
            incoming[*target].1 += stats.errors;
        }
        let no_stats = NodeStats::default();
        let mut nodes: Vec<Node> = names
            .keys
            .iter()
            .zip(&names.ids)
            .zip(&incoming)
            .enumerate()
            .filter(|(at, _)| inside.is_none() || shown[*at])
            .map(|(_, ((key, id), (calls_in, errors_in)))| {
                let id = id.clone();
                if key.kind != NodeKind::Service {
                    let (calls_in, errors_in) = (*calls_in, *errors_in);
                    return Node {
                        id,
                        kind: key.kind,
                        calls_in,
                        errors_in,
                        p50_ms: 0.0,
                        p95_ms: 0.0,
                        p99_ms: 0.0,
                        health: Health::default(),
                        attributes: Default::default(),
                        group: None,
                    };
                }
                let stats = self
                    .services
                    .get(&key.name)
                    .map_or(&no_stats, |counted| &counted.value);
                Node {
                    id,
                    kind: key.kind,
                    calls_in: stats.calls_in,
                    errors_in: stats.errors_in,
                    p50_ms: stats.latency.quantile_ms(0.50),
                    p95_ms: stats.latency.quantile_ms(0.95),
                    p99_ms: stats.latency.quantile_ms(0.99),
                    health: Health::default(),
                    attributes: Default::default(),
                    group: None,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Snapshot {
            from_ns,
            to_ns,
            nodes,
            edges,
            loops: Vec::new(),
        }
    }
}

/// Trace loops to add to the edges from a source to a target.
type PairCount = (Arc<str>, Arc<str>, u64);

/// The graph's loops, plus the per-trace loops: counted on their loop, and (the second
/// result) on each of its (source, target) pairs, which the caller adds to the edges it
/// holds. A per-trace loop whose edges are not all in the window still gets its entry.
fn trace_loops_on(
    graph_loops: Vec<FeedbackLoop>,
    pairs: &Pairs<'_>,
    trace_loops: &BTreeMap<Cycle, Counted<u64>>,
    names: &DisplayNames,
) -> (Vec<FeedbackLoop>, Vec<PairCount>) {
    let mut loops: BTreeMap<Arc<str>, FeedbackLoop> =
        graph_loops.into_iter().map(|l| (l.id.clone(), l)).collect();
    let mut counted = Vec::new();
    for (cycle, Counted { value: count, .. }) in trace_loops {
        let found = loop_of_cycle(cycle.iter().map(|k| names.of(k).into()).collect(), pairs);
        for (source, target) in found.edges.iter() {
            counted.push((source.clone(), target.clone(), *count));
        }
        loops.entry(found.id.clone()).or_insert(found).trace_loops += count;
    }
    (loops.into_values().collect(), counted)
}

/// Gives a snapshot its loops and adds the trace loops counted per pair to its edges.
fn attach(snapshot: &mut Snapshot, loops: Vec<FeedbackLoop>, counted: Vec<PairCount>) {
    for (source, target, count) in counted {
        count_on(&mut snapshot.edges, &source, &target, count);
    }
    snapshot.loops = loops;
}

/// Adds `count` trace loops to every edge from `source` to `target` (sync and async) among
/// `edges`, which are sorted by (source, target, kind).
fn count_on(edges: &mut [Edge], source: &str, target: &str, count: u64) {
    let first =
        edges.partition_point(|e| (e.source.as_str(), e.target.as_str()) < (source, target));
    for edge in edges.iter_mut().skip(first) {
        if (edge.source.as_str(), edge.target.as_str()) != (source, target) {
            break;
        }
        edge.trace_loops += count;
    }
}

/// A neighbourhood's part of a window's snapshot ([`WindowStats::around`]), with the size
/// of the whole window's graph.
#[derive(Debug, Clone)]
pub struct Around {
    pub snapshot: Snapshot,
    pub total_nodes: usize,
    pub total_edges: usize,
}

/// Ids for a window's nodes: a service keeps its name; another node whose name is also
/// used by a node of the window is prefixed with its kind (`"queue:orders"`). A 15-minute
/// window of a big system names hundreds of thousands of edge ends: they are told apart by
/// the address of their name (the graph interns names, so one name is one allocation but
/// for buckets read back from disk), which is far cheaper to hash than the name, and only
/// the distinct keys (a few thousand) are hashed by value.
struct DisplayNames {
    /// The distinct keys, and each one's id.
    keys: Vec<NodeKey>,
    ids: Vec<String>,
    /// Every key's place in `keys`, by its kind and the address of its name.
    by_address: FastMap<(NodeKind, usize), usize>,
}

fn address(key: &NodeKey) -> (NodeKind, usize) {
    (key.kind, Arc::as_ptr(&key.name).cast::<u8>() as usize)
}

impl DisplayNames {
    fn new<'a>(all: impl Iterator<Item = &'a NodeKey>) -> Self {
        let mut first_of: FastMap<(NodeKind, usize), &'a NodeKey> = FastMap::default();
        for key in all {
            first_of.entry(address(key)).or_insert(key);
        }
        let mut place: FastMap<&'a NodeKey, usize> = FastMap::default();
        let mut distinct: Vec<&'a NodeKey> = Vec::new();
        let by_address = first_of
            .into_iter()
            .map(|(at, key)| {
                let position = *place.entry(key).or_insert_with(|| {
                    distinct.push(key);
                    distinct.len() - 1
                });
                (at, position)
            })
            .collect();
        let keys: Vec<NodeKey> = distinct.into_iter().cloned().collect();
        let mut uses: FastMap<&str, usize> = FastMap::default();
        for key in &keys {
            *uses.entry(&key.name).or_default() += 1;
        }
        let ids = keys
            .iter()
            .map(|key| {
                let shared = uses.get(&*key.name).copied().unwrap_or(0) > 1;
                if key.kind == NodeKind::Service || !shared {
                    key.name.to_string()
                } else {
                    format!("{}:{}", key.kind.as_str(), key.name)
                }
            })
            .collect();
        Self {
            keys,
            ids,
            by_address,
        }
    }

    /// The places of each edge's ends, in the order of `edges` (whose keys were given to
    /// `new`).
    fn ends<T>(&self, edges: &BTreeMap<EdgeKey, T>) -> Vec<(usize, usize)> {
        edges
            .keys()
            .map(|key| (self.place(&key.source), self.place(&key.target)))
            .collect()
    }

    /// [`DisplayNames::position`] of a key given to `new`.
    fn place(&self, key: &NodeKey) -> usize {
        self.position(key)
            .unwrap_or_else(|| unreachable!("every key of the window is among its display names"))
    }

    /// `key`'s place among the distinct keys (every key given to `new` has one).
    fn position(&self, key: &NodeKey) -> Option<usize> {
        self.by_address
            .get(&address(key))
            .copied()
            .or_else(|| self.keys.iter().position(|known| known == key))
    }

    fn of(&self, key: &NodeKey) -> String {
        self.position(key)
            .and_then(|at| self.ids.get(at))
            .cloned()
            .unwrap_or_else(|| key.name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(source: NodeKey, target: NodeKey, calls: u64) -> (EdgeKey, EdgeStats) {
        (
            EdgeKey {
                source,
                target,
                kind: EdgeKind::Async,
            },
            EdgeStats {
                calls,
                ..Default::default()
            },
        )
    }

    /// Names are told apart by address first: one name in two allocations (a bucket read
    /// back from disk beside live ones) is still one node, and a queue named as a service
    /// is still prefixed.
    #[test]
    fn one_name_in_two_allocations_is_one_node() {
        let (orders, orders_again) = (Arc::<str>::from("orders"), Arc::<str>::from("orders"));
        let billing = Arc::<str>::from("billing");
        let mut first = Bucket::default();
        first
            .edges
            .extend([edge(NodeKey::service(&orders), NodeKey::queue(&billing), 3)]);
        first.services.insert(billing.clone(), NodeStats::default());
        let mut second = Bucket::default();
        second.edges.extend([
            edge(NodeKey::queue(&billing), NodeKey::service(&orders_again), 4),
            edge(NodeKey::service(&billing), NodeKey::queue(&orders_again), 5),
        ]);
        let mut stats = WindowStats::default();
        stats.add(&first);
        stats.add(&second);
        let snapshot = stats.figures_only(0, 1);
        let nodes: Vec<(&str, u64)> = snapshot
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.calls_in))
            .collect();
        assert_eq!(
            nodes,
            [
                ("billing", 0),
                ("orders", 0),
                ("queue:billing", 3),
                ("queue:orders", 5)
            ]
        );
        let edges: Vec<(&str, &str)> = snapshot
            .edges
            .iter()
            .map(|e| (e.source.as_str(), e.target.as_str()))
            .collect();
        assert_eq!(
            edges,
            [
                ("billing", "queue:orders"),
                ("orders", "queue:billing"),
                ("queue:billing", "orders")
            ]
        );
    }
}

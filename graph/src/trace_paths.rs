//! What a finished trace tells beyond its single calls: the loops it went round (it returned
//! to a node it had already left, A -> B -> A) and its calls per calling span (amplification).
//! Both are computed once the trace is idle, from its whole span tree, so they do not depend
//! on the order its spans arrived in.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::FastMap;
use crate::spans::SpanId;
use crate::window::{Cycle, EdgeKey, NodeKey};

/// How the trace reached a span from its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entered {
    /// No inferred call: the same service, or a hop no rule turns into an edge.
    NoHop,
    /// A call straight from the parent's service (sync, or async without a queue).
    Direct,
    /// A message through a queue.
    ViaQueue(NodeKey),
}

/// The parts of a span the trace walk needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TraceSpan<'a> {
    pub id: SpanId,
    pub parent: Option<SpanId>,
    pub service: &'a Arc<str>,
    pub start_ns: i64,
    pub entered: &'a Entered,
}

/// One inferred call whose calling span is known.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CallRecord {
    pub edge: EdgeKey,
    /// The span that made the call: the parent of the CLIENT or PRODUCER span, or the
    /// parent of a SERVER span called without a CLIENT span, or the PRODUCER of a message.
    pub caller: SpanId,
    pub time_ns: i64,
}

/// Calls of one edge by one caller: `calls` counts towards the edge's amplification once,
/// in the bucket of the first call.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct CallerGroup {
    pub edge: EdgeKey,
    pub calls: u64,
    pub time_ns: i64,
}

pub(crate) fn caller_groups(calls: &[CallRecord]) -> Vec<CallerGroup> {
    // A trace makes a handful of calls: sorting them by (edge, caller) and folding the runs
    // costs less than a hash table, and allocates once.
    let mut sorted: Vec<&CallRecord> = calls.iter().collect();
    sorted.sort_unstable_by(|a, b| a.edge.cmp(&b.edge).then(a.caller.cmp(&b.caller)));
    let mut groups: Vec<CallerGroup> = Vec::new();
    let mut last_caller = None;
    for call in sorted {
        match groups.last_mut() {
            Some(group) if group.edge == call.edge && last_caller == Some(call.caller) => {
                group.calls += 1;
                group.time_ns = group.time_ns.min(call.time_ns);
            }
            _ => groups.push(CallerGroup {
                edge: call.edge.clone(),
                calls: 1,
                time_ns: call.time_ns,
            }),
        }
        last_caller = Some(call.caller);
    }
    groups.sort();
    groups
}

/// A path of nodes a flow went through, elementary (no node twice), ending at the node of
/// the span it reached.
pub(crate) type Path = Vec<NodeKey>;

/// Paths kept per span: the smallest ones, so the choice depends only on the set. Spans reached
/// by more paths come after a batch consumer whose producers came by different ways.
pub(crate) const MAX_PATHS: usize = 8;

/// Paths that reached a span of this trace from another one: a CONSUMER placed after
/// PRODUCER spans of other traces (by span link) continues their paths.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seed<'a> {
    /// The consumer span.
    pub span: SpanId,
    /// The queue between producer and consumer, when there is one.
    pub queue: Option<&'a NodeKey>,
    /// The producers' paths, each ending at the producer's service.
    pub paths: &'a [Path],
}

/// What walking a finished trace found.
#[derive(Debug, Default)]
pub(crate) struct TraceWalk {
    /// The cycles the trace went round, each with the start time of the span where it first
    /// closed.
    pub cycles: BTreeMap<Cycle, i64>,
    /// The paths that reached each span asked for, in the order asked (empty for a span
    /// not in the trace or not reached from a root).
    pub paths: Vec<Vec<Path>>,
}

/// Walks the trace down from each root, keeping the paths of nodes that reached each span;
/// a hop into a node already on a path closes a cycle (the path from that node on), and the
/// path is cut back to that node, so every cycle is elementary and made of edges the flow
/// really took. A change of service without an inferred call restarts the path. A span
/// with `seeds` also continues the paths other traces reached it with, so a loop through a
/// queue whose consumer starts a trace of its own is found in the consumer's trace, where
/// it closes. A trace counts each cycle once, however many of its paths go round it.
pub(crate) fn walk_trace(
    spans: &[TraceSpan<'_>],
    seeds: &[Seed<'_>],
    wanted: &[SpanId],
) -> TraceWalk {
    let mut walk = TraceWalk {
        cycles: BTreeMap::new(),
        paths: vec![Vec::new(); wanted.len()],
    };
    // Only hops extend a path: a trace that made none, reached by no other, went round
    // nothing, and no one asks what reached its spans.
    if seeds.is_empty()
        && wanted.is_empty()
        && spans
            .iter()
            .all(|span| matches!(span.entered, Entered::NoHop))
    {
        return walk;
    }
    let tree = SpanTree::new(spans);
    let cycles = &mut walk.cycles;
    let mut seeded: FastMap<usize, Vec<Path>> = FastMap::default();
    for seed in seeds {
        let Some(at) = tree.find(spans, seed.span) else {
            continue;
        };
        let span = &spans[at];
        let node = NodeKey::service(span.service);
        let entry = seeded.entry(at).or_default();
        for path in seed.paths {
            let mut next = path.clone();
            if let Some(queue) = seed.queue {
                step(&mut next, queue.clone(), span.start_ns, cycles);
            }
            step(&mut next, node.clone(), span.start_ns, cycles);
            entry.push(next);
        }
    }
    let wanted_at: FastMap<usize, usize> = wanted
        .iter()
        .enumerate()
        .filter_map(|(slot, id)| tree.find(spans, *id).map(|at| (at, slot)))
        .collect();
    let mut with_seeds = |at: usize, paths: Paths| -> Paths {
        if seeded.is_empty() {
            return paths;
        }
        match seeded.remove(&at) {
            Some(mut more) => {
                more.extend(paths.iter().cloned());
                keep_distinct(&mut more);
                Rc::from(more)
            }
            None => paths,
        }
    };
    let mut stack: Vec<(usize, Paths)> = tree
        .roots()
        .map(|root| {
            let own: Paths = Rc::from([vec![NodeKey::service(spans[root].service)]]);
            (root, with_seeds(root, own))
        })
        .collect();
    while let Some((index, paths)) = stack.pop() {
        if !wanted_at.is_empty()
            && let Some(&slot) = wanted_at.get(&index)
        {
            walk.paths[slot] = paths.to_vec();
        }
        for &child in tree.children(index) {
            let span = &spans[child];
            let node = NodeKey::service(span.service);
            let child_paths = match span.entered {
                Entered::NoHop if span.service == spans[index].service => paths.clone(),
                Entered::NoHop => Rc::from([vec![node]]),
                Entered::Direct => stepped(&paths, None, node, span.start_ns, cycles),
                Entered::ViaQueue(queue) => {
                    stepped(&paths, Some(queue), node, span.start_ns, cycles)
                }
            };
            stack.push((child, with_seeds(child, child_paths)));
        }
    }
    walk
}

/// The paths that reached one span, shared by its same-service children.
type Paths = Rc<[Path]>;

/// Each path stepped into `queue` (if any) and `node`.
fn stepped(
    paths: &[Path],
    queue: Option<&NodeKey>,
    node: NodeKey,
    time_ns: i64,
    cycles: &mut BTreeMap<Cycle, i64>,
) -> Paths {
    let mut step_one = |path: &Path| {
        let mut next = path.clone();
        if let Some(queue) = queue {
            step(&mut next, queue.clone(), time_ns, cycles);
        }
        step(&mut next, node.clone(), time_ns, cycles);
        next
    };
    // Nearly every span is reached by one path: collected straight into the shared slice,
    // one allocation, as before paths came from other traces.
    if paths.len() == 1 {
        return paths.iter().map(&mut step_one).collect();
    }
    let mut next: Vec<Path> = paths.iter().map(step_one).collect();
    keep_distinct(&mut next);
    Rc::from(next)
}

/// Removes repeated paths and keeps the [`MAX_PATHS`] smallest: which are kept depends only
/// on the set, not on the order the paths came in.
pub(crate) fn keep_distinct(paths: &mut Vec<Path>) {
    if paths.len() > 1 {
        paths.sort_unstable();
        paths.dedup();
        paths.truncate(MAX_PATHS);
    }
}

/// A trace's spans as a tree, by position: each span's children in one flat list (a span
/// whose parent is missing, or itself, is a root).
struct SpanTree {
    /// `children[first[i]..first[i + 1]]` are the children of span `i`, and those of
    /// `i = spans.len()` the roots.
    first: Vec<usize>,
    children: Vec<usize>,
    /// Span id to position, for a trace too long to scan.
    position: Option<FastMap<SpanId, usize>>,
}

/// Traces up to this many spans find a parent by scanning; larger ones hash.
const SCAN_SPANS: usize = 32;

impl SpanTree {
    fn new(spans: &[TraceSpan<'_>]) -> Self {
        let count = spans.len();
        let position: Option<FastMap<SpanId, usize>> = (count > SCAN_SPANS)
            .then(|| spans.iter().enumerate().map(|(i, s)| (s.id, i)).collect());
        let find = |id: SpanId| match &position {
            Some(position) => position.get(&id).copied(),
            None => spans.iter().position(|s| s.id == id),
        };
        // Slot `count` stands for the roots.
        let parents: Vec<usize> = spans
            .iter()
            .enumerate()
            .map(|(index, span)| {
                span.parent
                    .and_then(find)
                    .filter(|&parent| parent != index)
                    .unwrap_or(count)
            })
            .collect();
        let mut first = vec![0; count + 3];
        for &parent in &parents {
            first[parent + 2] += 1;
        }
        for slot in 2..first.len() {
            first[slot] += first[slot - 1];
        }
        let mut children = vec![0; count];
        for (index, &parent) in parents.iter().enumerate() {
            children[first[parent + 1]] = index;
            first[parent + 1] += 1;
        }
        SpanTree {
            first,
            children,
            position,
        }
    }

    /// The position of span `id`.
    fn find(&self, spans: &[TraceSpan<'_>], id: SpanId) -> Option<usize> {
        match &self.position {
            Some(position) => position.get(&id).copied(),
            None => spans.iter().position(|span| span.id == id),
        }
    }

    fn children(&self, index: usize) -> &[usize] {
        &self.children[self.first[index]..self.first[index + 1]]
    }

    fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        self.children(self.first.len() - 3).iter().copied()
    }
}

fn step(path: &mut Vec<NodeKey>, node: NodeKey, time_ns: i64, cycles: &mut BTreeMap<Cycle, i64>) {
    let Some(seen) = path.iter().position(|n| *n == node) else {
        path.push(node);
        return;
    };
    let mut cycle = path[seen..].to_vec();
    let smallest = cycle
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.cmp(b.1))
        .map_or(0, |(i, _)| i);
    cycle.rotate_left(smallest);
    let first = cycles.entry(cycle).or_insert(time_ns);
    *first = (*first).min(time_ns);
    path.truncate(seen + 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EdgeKind;

    /// Spans as (id, parent, service, how entered: "-" none, "d" direct, "q:<queue>").
    fn check(spans: &[(u8, Option<u8>, &str, &str)], expected: &[&str]) {
        let services: Vec<Arc<str>> = spans.iter().map(|s| Arc::from(s.2)).collect();
        let entered: Vec<Entered> = spans
            .iter()
            .map(|s| match s.3 {
                "-" => Entered::NoHop,
                "d" => Entered::Direct,
                queue => {
                    Entered::ViaQueue(NodeKey::queue(&Arc::from(queue.trim_start_matches("q:"))))
                }
            })
            .collect();
        let trace: Vec<TraceSpan<'_>> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| TraceSpan {
                id: [0, 0, 0, 0, 0, 0, 0, s.0],
                parent: s.1.map(|p| [0, 0, 0, 0, 0, 0, 0, p]),
                service: &services[i],
                start_ns: i as i64,
                entered: &entered[i],
            })
            .collect();
        let render = |cycles: BTreeMap<Cycle, i64>| -> Vec<String> {
            cycles
                .iter()
                .map(|(cycle, time)| {
                    let names: Vec<&str> = cycle.iter().map(|n| &*n.name).collect();
                    format!("{} @{time}", names.join(" -> "))
                })
                .collect()
        };
        let cycles = |spans: &[TraceSpan<'_>]| walk_trace(spans, &[], &[]).cycles;
        assert_eq!(render(cycles(&trace)), expected);
        let mut reversed = trace.clone();
        reversed.reverse();
        assert_eq!(render(cycles(&reversed)), expected, "order of spans");
    }

    #[test]
    fn a_trace_without_return_has_no_cycle() {
        check(
            &[
                (1, None, "gateway", "-"),
                (2, Some(1), "gateway", "-"),
                (3, Some(2), "orders", "d"),
                (4, Some(3), "inventory", "d"),
            ],
            &[],
        );
    }

    #[test]
    fn a_to_b_to_a_closes_a_cycle() {
        check(
            &[
                (1, None, "a", "-"),
                (2, Some(1), "a", "-"),
                (3, Some(2), "b", "d"),
                (4, Some(3), "b", "-"),
                (5, Some(4), "a", "d"),
            ],
            &["a -> b @4"],
        );
    }

    #[test]
    fn a_cycle_through_a_queue_includes_the_queue() {
        check(
            &[
                (1, None, "orders", "-"),
                (2, Some(1), "billing", "q:topic"),
                (3, Some(2), "orders", "d"),
            ],
            &["billing -> orders -> topic @2"],
        );
    }

    #[test]
    fn a_hop_without_an_inferred_call_restarts_the_path() {
        check(
            &[
                (1, None, "a", "-"),
                (2, Some(1), "b", "-"),
                (3, Some(2), "a", "d"),
            ],
            &[],
        );
    }

    #[test]
    fn nested_returns_give_elementary_cycles_counted_once() {
        // a -> b -> c -> b -> a, and again b -> c -> b later in the trace.
        check(
            &[
                (1, None, "a", "-"),
                (2, Some(1), "b", "d"),
                (3, Some(2), "c", "d"),
                (4, Some(3), "b", "d"),
                (5, Some(4), "a", "d"),
                (6, Some(5), "b", "d"),
                (7, Some(6), "c", "d"),
                (8, Some(7), "b", "d"),
            ],
            &["a -> b @4", "b -> c @3"],
        );
    }

    #[test]
    fn a_trace_too_long_to_scan_finds_its_cycles_the_same_way() {
        // Beyond SCAN_SPANS, parents are found through a hash table.
        let spans: Vec<(u8, Option<u8>, &str, &str)> = (1..=40u8)
            .map(|id| match id {
                1 => (1, None, "a", "-"),
                _ if id % 2 == 0 => (id, Some(id - 1), "b", "d"),
                _ => (id, Some(id - 1), "a", "d"),
            })
            .collect();
        assert!(spans.len() > SCAN_SPANS);
        check(&spans, &["a -> b @2"]);
    }

    #[test]
    fn a_service_calling_itself_is_a_self_loop() {
        check(&[(1, None, "a", "-"), (2, Some(1), "a", "d")], &["a @1"]);
    }

    #[test]
    fn a_consumer_continues_the_paths_other_traces_reached_its_producers_with() {
        // billing's CONSUMER (1) consumed from `topic` what orders published, in traces
        // reached by gateway -> orders and by orders alone; billing then calls orders (3),
        // which publishes again (4).
        let names: Vec<Arc<str>> = ["billing", "orders"].into_iter().map(Arc::from).collect();
        let node = |name: &str| NodeKey::service(&Arc::from(name));
        let (no_hop, direct) = (Entered::NoHop, Entered::Direct);
        let id = |n: u8| [0, 0, 0, 0, 0, 0, 0, n];
        let trace = [
            (1, None, 0, &no_hop),
            (2, Some(1), 0, &no_hop),
            (3, Some(2), 1, &direct),
            (4, Some(3), 1, &no_hop),
        ]
        .map(|(span, parent, service, entered)| TraceSpan {
            id: id(span),
            parent: parent.map(id),
            service: &names[service],
            start_ns: i64::from(span) * 10,
            entered,
        });
        let topic = NodeKey::queue(&Arc::from("topic"));
        let paths = [vec![node("gateway"), node("orders")], vec![node("orders")]];
        let seeds = [Seed {
            span: id(1),
            queue: Some(&topic),
            paths: &paths,
        }];
        let walk = walk_trace(&trace, &seeds, &[id(4), id(9)]);
        let render = |path: &Path| -> String {
            let names: Vec<&str> = path.iter().map(|n| &*n.name).collect();
            names.join(" -> ")
        };
        let cycles: Vec<(String, i64)> = walk.cycles.iter().map(|(c, t)| (render(c), *t)).collect();
        // Closed where billing calls orders (span 3, at 30), once for both paths.
        assert_eq!(cycles, [("billing -> orders -> topic".to_string(), 30)]);
        // What reached the producer (4), for the traces its consumers start: each path cut
        // back to orders where it closed, and billing -> orders from billing's own root.
        let reached: Vec<Vec<String>> = walk
            .paths
            .iter()
            .map(|paths| paths.iter().map(render).collect())
            .collect();
        assert_eq!(
            reached,
            [
                vec![
                    "billing -> orders".to_string(),
                    "gateway -> orders".to_string(),
                    "orders".to_string()
                ],
                vec![]
            ]
        );
    }

    #[test]
    fn calls_are_grouped_by_edge_and_caller() {
        let edge = |target: &str| EdgeKey {
            source: NodeKey::service(&Arc::from("a")),
            target: NodeKey::service(&Arc::from(target)),
            kind: EdgeKind::Sync,
        };
        let call = |target: &str, caller: u8, time_ns: i64| CallRecord {
            edge: edge(target),
            caller: [0, 0, 0, 0, 0, 0, 0, caller],
            time_ns,
        };
        let groups = caller_groups(&[
            call("b", 1, 30),
            call("b", 1, 10),
            call("b", 1, 20),
            call("b", 2, 40),
            call("c", 1, 50),
        ]);
        let rendered: Vec<(String, u64, i64)> = groups
            .iter()
            .map(|g| (g.edge.target.name.to_string(), g.calls, g.time_ns))
            .collect();
        assert_eq!(
            rendered,
            [
                ("b".to_string(), 1, 40),
                ("b".to_string(), 3, 10),
                ("c".to_string(), 1, 50)
            ]
        );
    }
}

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

/// The cycles the trace went round, each with the start time of the span where it first
/// closed. Walking down from each root, the trace keeps the path of nodes it went through;
/// a hop into a node already on the path closes a cycle (the path from that node on), and
/// the path is cut back to that node, so every cycle is elementary and made of edges the
/// trace really took. A change of service without an inferred call restarts the path.
pub(crate) fn trace_cycles(spans: &[TraceSpan<'_>]) -> BTreeMap<Cycle, i64> {
    let mut cycles: BTreeMap<Cycle, i64> = BTreeMap::new();
    // Only hops extend a path: a trace that made none went round nothing.
    if spans
        .iter()
        .all(|span| matches!(span.entered, Entered::NoHop))
    {
        return cycles;
    }
    let tree = SpanTree::new(spans);
    let mut stack: Vec<(usize, Rc<Vec<NodeKey>>)> = tree
        .roots()
        .map(|root| (root, Rc::new(vec![NodeKey::service(spans[root].service)])))
        .collect();
    while let Some((index, path)) = stack.pop() {
        for &child in tree.children(index) {
            let span = &spans[child];
            let node = NodeKey::service(span.service);
            let child_path = match span.entered {
                Entered::NoHop if span.service == spans[index].service => path.clone(),
                Entered::NoHop => Rc::new(vec![node]),
                Entered::Direct => {
                    let mut next = (*path).clone();
                    step(&mut next, node, span.start_ns, &mut cycles);
                    Rc::new(next)
                }
                Entered::ViaQueue(queue) => {
                    let mut next = (*path).clone();
                    step(&mut next, queue.clone(), span.start_ns, &mut cycles);
                    step(&mut next, node, span.start_ns, &mut cycles);
                    Rc::new(next)
                }
            };
            stack.push((child, child_path));
        }
    }
    cycles
}

/// A trace's spans as a tree, by position: each span's children in one flat list (a span
/// whose parent is missing, or itself, is a root).
struct SpanTree {
    /// `children[first[i]..first[i + 1]]` are the children of span `i`, and those of
    /// `i = spans.len()` the roots.
    first: Vec<usize>,
    children: Vec<usize>,
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
        SpanTree { first, children }
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
        assert_eq!(render(trace_cycles(&trace)), expected);
        let mut reversed = trace.clone();
        reversed.reverse();
        assert_eq!(render(trace_cycles(&reversed)), expected, "order of spans");
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

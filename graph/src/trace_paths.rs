//! What a finished trace tells beyond its single calls: the loops it went round (it returned
//! to a node it had already left, A -> B -> A) and its calls per calling span (amplification).
//! Both are computed once the trace is idle, from its whole span tree, so they do not depend
//! on the order its spans arrived in.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

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
    let mut groups: HashMap<(&EdgeKey, SpanId), (u64, i64)> = HashMap::new();
    for call in calls {
        let group = groups
            .entry((&call.edge, call.caller))
            .or_insert((0, call.time_ns));
        group.0 += 1;
        group.1 = group.1.min(call.time_ns);
    }
    let mut groups: Vec<CallerGroup> = groups
        .into_iter()
        .map(|((edge, _), (calls, time_ns))| CallerGroup {
            edge: edge.clone(),
            calls,
            time_ns,
        })
        .collect();
    groups.sort();
    groups
}

/// The cycles the trace went round, each with the start time of the span where it first
/// closed. Walking down from each root, the trace keeps the path of nodes it went through;
/// a hop into a node already on the path closes a cycle (the path from that node on), and
/// the path is cut back to that node, so every cycle is elementary and made of edges the
/// trace really took. A change of service without an inferred call restarts the path.
pub(crate) fn trace_cycles(spans: &[TraceSpan<'_>]) -> BTreeMap<Cycle, i64> {
    let position: HashMap<SpanId, usize> =
        spans.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (index, span) in spans.iter().enumerate() {
        match span.parent.and_then(|p| position.get(&p)) {
            Some(&parent) if parent != index => children[parent].push(index),
            _ => roots.push(index),
        }
    }

    let mut cycles: BTreeMap<Cycle, i64> = BTreeMap::new();
    let mut stack: Vec<(usize, Rc<Vec<NodeKey>>)> = roots
        .into_iter()
        .map(|root| (root, Rc::new(vec![NodeKey::service(spans[root].service)])))
        .collect();
    while let Some((index, path)) = stack.pop() {
        for &child in &children[index] {
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

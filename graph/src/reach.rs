//! Graph questions (issue 25): who depends on a node (`blast_radius`), what it depends on
//! (`dependencies`), and the paths between two nodes (`paths`), each with the traffic at
//! stake. Edges of both kinds between two nodes count as one link, their calls added.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::filter::FilterError;
use crate::{NodeKind, Snapshot};

/// A node reached from the asked one.
#[derive(Debug, Clone, PartialEq)]
pub struct Reach {
    pub node: String,
    pub kind: NodeKind,
    /// Edges between it and the asked node (1: a direct caller or callee).
    pub hops: usize,
    /// Its neighbour one hop nearer the asked node, the busiest when there are several.
    pub via: String,
    /// Calls and errors of the link between it and `via`.
    pub calls: u64,
    pub errors: u64,
}

/// A path between two nodes, following calls.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphPath {
    pub nodes: Vec<String>,
    /// The fewest calls of its links: at most this many calls took the whole path.
    pub calls: u64,
    /// Errors summed over its links.
    pub errors: u64,
    /// The p99s of its links added: what a slow call along it can cost.
    pub p99_ms: f64,
}

/// At most this many paths are answered: enough to see the ways between two nodes.
pub const MAX_PATHS: usize = 1_000;

/// Calls, errors and the highest p99 of a link (both kinds together).
type Figures = (u64, u64, f64);
/// Each link `source → target`, with its figures.
type Links<'a> = BTreeMap<(&'a str, &'a str), Figures>;
/// For each node, its neighbours one way, with the link's figures.
type Adjacent<'a> = HashMap<&'a str, Vec<(&'a str, Figures)>>;

fn links(snapshot: &Snapshot) -> Links<'_> {
    let mut links = Links::new();
    for edge in &snapshot.edges {
        let link = links
            .entry((edge.source.as_str(), edge.target.as_str()))
            .or_insert((0, 0, 0.0));
        link.0 += edge.calls;
        link.1 += edge.errors;
        if edge.p99_ms > link.2 {
            link.2 = edge.p99_ms;
        }
    }
    links
}

fn known<'a>(
    snapshot: &'a Snapshot,
    node: &str,
) -> Result<HashMap<&'a str, NodeKind>, FilterError> {
    let kinds: HashMap<&str, NodeKind> = snapshot
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.kind))
        .collect();
    if kinds.contains_key(node) {
        Ok(kinds)
    } else {
        Err(FilterError::UnknownNode(node.to_string()))
    }
}

/// Everything that calls `node`, directly or through others, within `hops` links: what
/// breaks or slows down if it fails. Sorted by hops, then by calls (busiest first), then id.
pub fn blast_radius(
    snapshot: &Snapshot,
    node: &str,
    hops: usize,
) -> Result<Vec<Reach>, FilterError> {
    reach(snapshot, node, hops, true)
}

/// Everything `node` calls, directly or through others, within `hops` links. Sorted as
/// [`blast_radius`].
pub fn dependencies(
    snapshot: &Snapshot,
    node: &str,
    hops: usize,
) -> Result<Vec<Reach>, FilterError> {
    reach(snapshot, node, hops, false)
}

fn reach(
    snapshot: &Snapshot,
    node: &str,
    hops: usize,
    up: bool,
) -> Result<Vec<Reach>, FilterError> {
    let kinds = known(snapshot, node)?;
    let links = links(snapshot);
    // Neighbours one hop further from `node`, with the link's figures.
    let mut further: Adjacent = HashMap::new();
    for (&(source, target), &figures) in &links {
        let (near, far) = if up {
            (target, source)
        } else {
            (source, target)
        };
        further.entry(near).or_default().push((far, figures));
    }
    let mut distance: HashMap<&str, usize> = HashMap::from([(node, 0)]);
    let mut queue = VecDeque::from([node]);
    let mut found: Vec<Reach> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    while let Some(near) = queue.pop_front() {
        let d = distance[near];
        if d == hops {
            continue;
        }
        for &(far, (calls, errors, _)) in further.get(near).map_or(&[][..], Vec::as_slice) {
            match distance.get(far) {
                None => {
                    distance.insert(far, d + 1);
                    queue.push_back(far);
                    index.insert(far, found.len());
                    found.push(Reach {
                        node: far.to_string(),
                        kind: kinds.get(far).copied().unwrap_or(NodeKind::Service),
                        hops: d + 1,
                        via: near.to_string(),
                        calls,
                        errors,
                    });
                }
                // Another neighbour at the same distance: the busiest link is the one shown.
                Some(&seen) if seen == d + 1 => {
                    if let Some(&at) = index.get(far) {
                        let reach = &mut found[at];
                        if calls > reach.calls || (calls == reach.calls && *near < *reach.via) {
                            reach.via = near.to_string();
                            reach.calls = calls;
                            reach.errors = errors;
                        }
                    }
                }
                Some(_) => {}
            }
        }
    }
    found.sort_by(|a, b| {
        a.hops
            .cmp(&b.hops)
            .then_with(|| b.calls.cmp(&a.calls))
            .then_with(|| a.node.cmp(&b.node))
    });
    Ok(found)
}

/// The simple paths (no node twice) from `from` to `to` of at most `max_hops` links,
/// following calls; the busiest first (then the shortest, then by nodes), at most
/// [`MAX_PATHS`] of them. `from == to` gives the loops through it.
pub fn paths(
    snapshot: &Snapshot,
    from: &str,
    to: &str,
    max_hops: usize,
) -> Result<Vec<GraphPath>, FilterError> {
    known(snapshot, from)?;
    known(snapshot, to)?;
    let links = links(snapshot);
    let mut out: Adjacent = HashMap::new();
    for (&(source, target), &figures) in &links {
        out.entry(source).or_default().push((target, figures));
    }
    let mut found = Vec::new();
    // Depth-first, bounded by hops and by the number of steps taken: a dense graph has more
    // paths than anyone reads.
    let mut budget: usize = 1_000_000;
    let mut path = vec![from];
    let mut figures: Vec<Figures> = Vec::new();
    walk(
        &out,
        to,
        max_hops,
        &mut path,
        &mut figures,
        &mut found,
        &mut budget,
    );
    found.sort_by(|a: &GraphPath, b: &GraphPath| {
        b.calls
            .cmp(&a.calls)
            .then_with(|| a.nodes.len().cmp(&b.nodes.len()))
            .then_with(|| a.nodes.cmp(&b.nodes))
    });
    found.truncate(MAX_PATHS);
    Ok(found)
}

fn walk<'a>(
    out: &Adjacent<'a>,
    to: &str,
    max_hops: usize,
    path: &mut Vec<&'a str>,
    figures: &mut Vec<Figures>,
    found: &mut Vec<GraphPath>,
    budget: &mut usize,
) {
    let Some(&here) = path.last() else { return };
    if figures.len() == max_hops || found.len() >= 10 * MAX_PATHS {
        return;
    }
    for &(next, link) in out.get(here).map_or(&[][..], Vec::as_slice) {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        if next == to {
            let mut nodes: Vec<String> = path.iter().map(|n| n.to_string()).collect();
            nodes.push(next.to_string());
            let all = figures.iter().chain(std::iter::once(&link));
            found.push(GraphPath {
                nodes,
                calls: all.clone().map(|f| f.0).min().unwrap_or(0),
                errors: all.clone().map(|f| f.1).sum(),
                p99_ms: all.map(|f| f.2).sum(),
            });
            continue;
        }
        if path.contains(&next) {
            continue;
        }
        path.push(next);
        figures.push(link);
        walk(out, to, max_hops, path, figures, found, budget);
        path.pop();
        figures.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Edge, EdgeKind, Health, Node};
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashSet};

    fn snapshot(n: usize, links: &[(usize, usize, bool, u64)]) -> Snapshot {
        let id = |i: usize| format!("n{i:02}");
        let mut edges: Vec<Edge> = links
            .iter()
            .map(|&(s, t, sync, calls)| Edge {
                source: id(s),
                target: id(t),
                kind: if sync {
                    EdgeKind::Sync
                } else {
                    EdgeKind::Async
                },
                calls,
                errors: calls / 7,
                p50_ms: 0.0,
                p95_ms: 0.0,
                p99_ms: calls as f64,
                bytes: 0,
                amplification: 1.0,
                trace_loops: 0,
                health: Health::default(),
                amplified: false,
            })
            .collect();
        edges.sort_by(|a, b| (&a.source, &a.target, a.kind).cmp(&(&b.source, &b.target, b.kind)));
        edges.dedup_by(|a, b| (&a.source, &a.target, a.kind) == (&b.source, &b.target, b.kind));
        Snapshot {
            from_ns: 0,
            to_ns: 1,
            nodes: (0..n)
                .map(|i| Node {
                    id: id(i),
                    kind: NodeKind::Service,
                    calls_in: 0,
                    errors_in: 0,
                    p50_ms: 0.0,
                    p95_ms: 0.0,
                    p99_ms: 0.0,
                    health: Health::default(),
                    attributes: Default::default(),
                    group: None,
                })
                .collect(),
            edges,
            loops: Vec::new(),
        }
    }

    fn systems() -> impl Strategy<Value = (Snapshot, usize, usize, usize)> {
        (2usize..10).prop_flat_map(|n| {
            (
                prop::collection::vec((0..n, 0..n, any::<bool>(), 1u64..50), 0..3 * n),
                0..n,
                0..n,
                0usize..5,
            )
                .prop_map(move |(links, a, b, hops)| (snapshot(n, &links), a, b, hops))
        })
    }

    /// Plain breadth-first search over the edge rows, level by level.
    fn bfs(s: &Snapshot, from: &str, hops: usize, up: bool) -> BTreeMap<String, usize> {
        let mut level: BTreeSet<String> = BTreeSet::from([from.to_string()]);
        let mut seen: BTreeMap<String, usize> = BTreeMap::from([(from.to_string(), 0)]);
        for d in 1..=hops {
            let mut next = BTreeSet::new();
            for e in &s.edges {
                let (near, far) = if up {
                    (&e.target, &e.source)
                } else {
                    (&e.source, &e.target)
                };
                if level.contains(near) && !seen.contains_key(far) {
                    next.insert(far.clone());
                }
            }
            for node in &next {
                seen.insert(node.clone(), d);
            }
            level = next;
        }
        seen.remove(from);
        seen
    }

    proptest! {
        #[test]
        fn blast_radius_and_dependencies_match_a_plain_breadth_first_search(
            (s, a, _, hops) in systems()
        ) {
            let node = format!("n{a:02}");
            for up in [true, false] {
                let got = if up { blast_radius(&s, &node, hops) } else { dependencies(&s, &node, hops) }.unwrap();
                let got_map: BTreeMap<String, usize> = got.iter().map(|r| (r.node.clone(), r.hops)).collect();
                prop_assert_eq!(got_map, bfs(&s, &node, hops, up));
                for r in &got {
                    // `via` is one hop nearer and linked to it the right way, with the
                    // link's calls (both kinds added).
                    let via_hops = if r.via == node { 0 } else { got.iter().find(|x| x.node == r.via).unwrap().hops };
                    prop_assert_eq!(via_hops + 1, r.hops);
                    let (source, target) = if up { (&r.node, &r.via) } else { (&r.via, &r.node) };
                    let calls: u64 = s.edges.iter().filter(|e| &e.source == source && &e.target == target).map(|e| e.calls).sum();
                    prop_assert!(calls > 0);
                    prop_assert_eq!(r.calls, calls);
                }
            }
        }

        #[test]
        fn paths_are_every_simple_path_within_the_hops(
            (s, a, b, hops) in systems()
        ) {
            let (from, to) = (format!("n{a:02}"), format!("n{b:02}"));
            let got = paths(&s, &from, &to, hops).unwrap();
            // By hand: every sequence of links, extended one hop at a time.
            let pairs: HashSet<(String, String)> = s.edges.iter().map(|e| (e.source.clone(), e.target.clone())).collect();
            let mut partial: Vec<Vec<String>> = vec![vec![from.clone()]];
            let mut expected: BTreeSet<Vec<String>> = BTreeSet::new();
            for _ in 0..hops {
                let mut next = Vec::new();
                for p in &partial {
                    for (x, y) in &pairs {
                        if x == p.last().unwrap() {
                            let mut q = p.clone();
                            q.push(y.clone());
                            if *y == to {
                                expected.insert(q);
                            } else if !p.contains(y) {
                                next.push(q);
                            }
                        }
                    }
                }
                partial = next;
            }
            let got_set: BTreeSet<Vec<String>> = got.iter().map(|p| p.nodes.clone()).collect();
            prop_assert_eq!(got_set.len(), got.len(), "no path twice");
            prop_assert_eq!(got_set, expected);
            for p in &got {
                let calls = p.nodes.windows(2).map(|w| s.edges.iter().filter(|e| e.source == w[0] && e.target == w[1]).map(|e| e.calls).sum::<u64>()).min().unwrap();
                prop_assert_eq!(p.calls, calls);
            }
        }
    }

    #[test]
    fn an_unknown_node_is_named() {
        let s = snapshot(2, &[(0, 1, true, 3)]);
        assert_eq!(
            blast_radius(&s, "nope", 2),
            Err(FilterError::UnknownNode("nope".into()))
        );
        assert!(paths(&s, "n00", "nope", 2).is_err());
    }
}

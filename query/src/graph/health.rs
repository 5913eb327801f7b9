//! Health of the graph's nodes and edges: ok, degraded or failing, from a window's figures
//! against the element's own baseline (control limits over the sub-windows before the window,
//! the same mean and σ as `anomaly/spc.rs`) and against the operator's objectives. Plain
//! functions over numbers; `GraphView` cuts the baseline windows and caches their figures.
//!
//! The rules, for an element with at least [`MIN_WINDOW_CALLS`] calls in the window (a quieter
//! one is ok, whatever its figures, so a quiet edge does not flap):
//! - the baseline is the sub-windows with at least [`MIN_BASELINE_CALLS`] calls; with fewer
//!   than `spc::MIN_BASELINE_POINTS` of them there are no limits (only the absolute rule and
//!   objectives apply);
//! - error rate above mean + 3σ (at least mean + [`ERROR_RATE_MARGIN`]), with at least
//!   [`MIN_ERRORS`] errors: degraded; above twice that limit: failing;
//! - error rate above [`FAILING_ERROR_RATE`] (with [`MIN_ERRORS`] errors): failing, baseline
//!   or not;
//! - p95 or p99 above mean + 3σ (at least [`LATENCY_MARGIN`] × mean and mean +
//!   [`LATENCY_FLOOR_MS`], so sketch error and jitter on a steady edge do not flag): degraded;
//!   a quantile is judged only in a window, and from baseline sub-windows, with at least
//!   [`MIN_TAIL_CALLS`] calls above it (p95: 60 calls, p99: 300), since a quantile over
//!   fewer calls is the slowest call or two and a quiet edge's p99 would flag by chance;
//! - an edge's calls per caller (amplification) above mean + 3σ (at least
//!   [`AMPLIFICATION_MARGIN`] × mean and mean + [`AMPLIFICATION_FLOOR`], so a steady edge's
//!   jitter does not flag): degraded, and the edge is `amplified` (a retry storm, or a
//!   caller that fans out more than it used to);
//! - a figure above the operator's objective: degraded.
//!
//! A node is the worst of its own figures (calls into it) and the edges it calls out on, so
//! a service whose calls fail reads degraded or failing even when nothing it serves fails.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use flowscope_graph::{Edge, EdgeKind, Health, HealthLevel, Node, Snapshot};

use crate::graph::anomaly::spc;

/// Fewer calls in the window than this, and an element is ok.
pub const MIN_WINDOW_CALLS: u64 = 20;
/// A baseline sub-window with fewer calls than this is left out of the baseline.
pub const MIN_BASELINE_CALLS: u64 = 10;
/// Fewer errors than this are never a verdict on their own.
pub const MIN_ERRORS: u64 = 3;
/// Limits at kσ.
pub const K: f64 = 3.0;
/// The error-rate limit is at least this far above the baseline mean (two points).
pub const ERROR_RATE_MARGIN: f64 = 0.02;
/// An error rate above this is failing, whatever the baseline.
pub const FAILING_ERROR_RATE: f64 = 0.20;
/// A latency quantile q is judged over at least this many calls above it: a window (or a
/// baseline sub-window) needs `MIN_TAIL_CALLS / (1 - q)` calls.
pub const MIN_TAIL_CALLS: f64 = 3.0;
/// The calls a window needs for its `quantile` latency to be judged: [`MIN_TAIL_CALLS`]
/// beyond it (60 for a p95, 300 for a p99).
pub fn min_calls_for(quantile: f64) -> u64 {
    (MIN_TAIL_CALLS / (1.0 - quantile) - 1e-9).ceil() as u64
}

/// A latency limit is at least this many times the baseline mean...
pub const LATENCY_MARGIN: f64 = 1.5;
/// ...and at least this many milliseconds above it.
pub const LATENCY_FLOOR_MS: f64 = 5.0;
/// An amplification limit is at least this many times the baseline mean...
pub const AMPLIFICATION_MARGIN: f64 = 1.2;
/// ...and at least this many calls per caller above it.
pub const AMPLIFICATION_FLOOR: f64 = 0.2;
/// At most this many reasons are given for a node (its own first, then its calls).
const MAX_NODE_REASONS: usize = 4;

/// The figures health is judged on: a window's, or one baseline sub-window's.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Figures {
    pub calls: u64,
    pub errors: u64,
    /// 0 when unknown (nodes other than services have no latency of their own).
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Calls per calling parent span; 0 when unknown (nodes, edges without known callers).
    pub amplification: f64,
}

impl Figures {
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.errors as f64 / self.calls as f64
        }
    }

    pub fn of_edge(edge: &Edge) -> Self {
        Self {
            calls: edge.calls,
            errors: edge.errors,
            p95_ms: edge.p95_ms,
            p99_ms: edge.p99_ms,
            amplification: edge.amplification,
        }
    }

    pub fn of_node(node: &Node) -> Self {
        Self {
            calls: node.calls_in,
            errors: node.errors_in,
            p95_ms: node.p95_ms,
            p99_ms: node.p99_ms,
            amplification: 0.0,
        }
    }
}

/// What the operator expects of a service (its own figures) or of one of its edges.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Objective {
    pub service: String,
    /// The edge `service -> target` (any kind) instead of the service itself.
    pub target: Option<String>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// A fraction: 0.01 is 1%.
    pub error_rate: Option<f64>,
}

/// A verdict and whether the calls per caller were beyond their limit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    pub health: Health,
    pub amplified: bool,
}

/// The verdict on one element: `window` against the `baseline` sub-windows before it and the
/// `objective` set for it.
pub fn judge(window: Figures, baseline: &[Figures], objective: Option<&Objective>) -> Health {
    assess(window, baseline, objective).health
}

/// [`judge`], also saying whether the amplification was beyond its limit.
pub fn assess(window: Figures, baseline: &[Figures], objective: Option<&Objective>) -> Verdict {
    if window.calls < MIN_WINDOW_CALLS {
        return Verdict::default();
    }
    let mut findings: Vec<(HealthLevel, String)> = Vec::new();
    let usable: Vec<&Figures> = baseline
        .iter()
        .filter(|f| f.calls >= MIN_BASELINE_CALLS)
        .collect();
    let rate = window.error_rate();
    let enough_errors = window.errors >= MIN_ERRORS;

    let rates: Vec<f64> = usable.iter().map(|f| f.error_rate()).collect();
    if let Some(base) = spc::baseline(&rates) {
        let limit = (base.mean + K * base.sigma).max(base.mean + ERROR_RATE_MARGIN);
        if enough_errors && rate > limit {
            let level = if rate > 2.0 * limit {
                HealthLevel::Failing
            } else {
                HealthLevel::Degraded
            };
            findings.push((
                level,
                format!(
                    "error rate {} above its limit {} (baseline {})",
                    percent(rate),
                    percent(limit),
                    percent(base.mean)
                ),
            ));
        }
    }
    let failing_already = findings.iter().any(|(l, _)| *l == HealthLevel::Failing);
    if enough_errors && rate > FAILING_ERROR_RATE && !failing_already {
        findings.push((
            HealthLevel::Failing,
            format!(
                "error rate {} above {}",
                percent(rate),
                percent(FAILING_ERROR_RATE)
            ),
        ));
    }

    type Of = fn(&Figures) -> f64;
    let latencies: [(&str, f64, f64, Of); 2] = [
        ("p95", 0.95, window.p95_ms, |f| f.p95_ms),
        ("p99", 0.99, window.p99_ms, |f| f.p99_ms),
    ];
    for (name, quantile, value, of) in latencies {
        let enough = |calls: u64| calls >= min_calls_for(quantile);
        if value <= 0.0 || !enough(window.calls) {
            continue;
        }
        let values: Vec<f64> = usable
            .iter()
            .filter(|f| enough(f.calls))
            .map(|f| of(f))
            .filter(|v| *v > 0.0)
            .collect();
        let Some(base) = spc::baseline(&values) else {
            continue;
        };
        let limit = (base.mean + K * base.sigma)
            .max(base.mean * LATENCY_MARGIN)
            .max(base.mean + LATENCY_FLOOR_MS);
        if value > limit {
            findings.push((
                HealthLevel::Degraded,
                format!(
                    "{name} {} above its limit {} (baseline {})",
                    millis(value),
                    millis(limit),
                    millis(base.mean)
                ),
            ));
        }
    }

    let amplification = amplification_finding(window.amplification, &usable);
    let amplified = amplification.is_some();
    findings.extend(amplification.map(|reason| (HealthLevel::Degraded, reason)));

    if let Some(objective) = objective {
        let latencies = [
            ("p95", window.p95_ms, objective.p95_ms),
            ("p99", window.p99_ms, objective.p99_ms),
        ];
        for (name, value, target) in latencies {
            if let Some(target) = target
                && value > target
            {
                findings.push((
                    HealthLevel::Degraded,
                    format!(
                        "{name} {} above its objective {}",
                        millis(value),
                        millis(target)
                    ),
                ));
            }
        }
        if let Some(target) = objective.error_rate
            && rate > target
        {
            findings.push((
                HealthLevel::Degraded,
                format!(
                    "error rate {} above its objective {}",
                    percent(rate),
                    percent(target)
                ),
            ));
        }
    }
    Verdict {
        health: verdict(findings),
        amplified,
    }
}

/// The reason when `value` calls per caller is beyond the limit of the usable sub-windows'
/// amplifications (those that knew their callers).
fn amplification_finding(value: f64, usable: &[&Figures]) -> Option<String> {
    if value <= 0.0 {
        return None;
    }
    let values: Vec<f64> = usable
        .iter()
        .map(|f| f.amplification)
        .filter(|v| *v > 0.0)
        .collect();
    let base = spc::baseline(&values)?;
    let limit = (base.mean + K * base.sigma)
        .max(base.mean * AMPLIFICATION_MARGIN)
        .max(base.mean + AMPLIFICATION_FLOOR);
    (value > limit).then(|| {
        format!(
            "calls per caller ×{value:.1} above its limit ×{limit:.1} (baseline ×{:.1})",
            base.mean
        )
    })
}

/// A node's verdict: its own, made worse by those of the edges it calls out on (`(target,
/// health)`), whose reasons it repeats as "calls to <target>: ...".
pub fn judge_node(own: Health, calls: &[(&str, &Health)]) -> Health {
    let mut findings: Vec<(HealthLevel, String)> = own
        .reasons
        .into_iter()
        .map(|reason| (own.level, reason))
        .collect();
    for (target, health) in calls {
        if health.level == HealthLevel::Ok {
            continue;
        }
        let first = health.reasons.first().map_or("", String::as_str);
        findings.push((health.level, format!("calls to {target}: {first}")));
    }
    let mut health = verdict(findings);
    health.level = health.level.max(own.level);
    if health.reasons.len() > MAX_NODE_REASONS {
        let more = health.reasons.len() - (MAX_NODE_REASONS - 1);
        health.reasons.truncate(MAX_NODE_REASONS - 1);
        health.reasons.push(format!("and {more} more"));
    }
    health
}

/// The worst level found, reasons worst first (in the order found within a level).
fn verdict(mut findings: Vec<(HealthLevel, String)>) -> Health {
    findings.sort_by_key(|f| std::cmp::Reverse(f.0));
    Health {
        level: findings.first().map_or(HealthLevel::Ok, |f| f.0),
        reasons: findings.into_iter().map(|f| f.1).collect(),
    }
}

fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// One baseline sub-window's figures, by element. Keys are hashes of the ids (64 bits: a
/// collision among 100,000 edges is about one in 10⁹), so a cached sub-window of the city's
/// 100,000 edges takes about 4 MB instead of its names' copies.
#[derive(Debug, Default)]
pub struct BaselineFigures {
    edges: HashMap<u64, Figures>,
    nodes: HashMap<u64, Figures>,
}

fn edge_key(source: &str, target: &str, kind: EdgeKind) -> u64 {
    let mut hasher = DefaultHasher::new();
    (source, target, kind).hash(&mut hasher);
    hasher.finish()
}

fn node_key(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

impl BaselineFigures {
    /// The figures of a sub-window's snapshot (its loops are not needed).
    pub fn of(snapshot: &Snapshot) -> Self {
        Self {
            edges: snapshot
                .edges
                .iter()
                .map(|e| (edge_key(&e.source, &e.target, e.kind), Figures::of_edge(e)))
                .collect(),
            nodes: snapshot
                .nodes
                .iter()
                .map(|n| (node_key(&n.id), Figures::of_node(n)))
                .collect(),
        }
    }
}

impl BaselineFigures {
    /// One edge's figures in this sub-window, if it had calls.
    pub fn edge(&self, source: &str, target: &str, kind: EdgeKind) -> Option<Figures> {
        self.edges.get(&edge_key(source, target, kind)).copied()
    }

    /// One node's figures in this sub-window, if it was in it.
    pub fn node(&self, id: &str) -> Option<Figures> {
        self.nodes.get(&node_key(id)).copied()
    }
}

/// Objectives by what they apply to.
#[derive(Debug, Default)]
pub struct Objectives {
    services: HashMap<String, Objective>,
    edges: HashMap<(String, String), Objective>,
}

impl Objectives {
    /// A later objective for the same service or edge replaces an earlier one.
    pub fn new(objectives: Vec<Objective>) -> Self {
        let mut result = Self::default();
        for objective in objectives {
            match &objective.target {
                Some(target) => {
                    let key = (objective.service.clone(), target.clone());
                    result.edges.insert(key, objective);
                }
                None => {
                    result.services.insert(objective.service.clone(), objective);
                }
            }
        }
        result
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.edges.is_empty()
    }

    fn of_edge(&self, edge: &Edge) -> Option<&Objective> {
        self.for_edge(&edge.source, &edge.target)
    }

    /// The objective set for the edge `source -> target`, if any.
    pub fn for_edge(&self, source: &str, target: &str) -> Option<&Objective> {
        if self.edges.is_empty() {
            return None;
        }
        self.edges.get(&(source.to_string(), target.to_string()))
    }

    /// The objective set for a service's own figures, if any.
    pub fn for_service(&self, id: &str) -> Option<&Objective> {
        self.services.get(id)
    }
}

/// The verdicts on nodes' own figures (calls into them), before the calls they make are
/// added: only those that are not ok, by node id. Incidents tell a service that is slow
/// itself from one that only waits on a slow dependency.
pub type OwnHealth = HashMap<String, Health>;

/// Judges every edge, then every node, of `snapshot` in place; returns the nodes' own
/// verdicts that are not ok.
pub fn judge_snapshot(
    snapshot: &mut Snapshot,
    baseline: &[std::sync::Arc<BaselineFigures>],
    objectives: &Objectives,
) -> OwnHealth {
    let mut history: Vec<Figures> = Vec::with_capacity(baseline.len());
    for edge in &mut snapshot.edges {
        let key = edge_key(&edge.source, &edge.target, edge.kind);
        history.clear();
        history.extend(baseline.iter().filter_map(|b| b.edges.get(&key).copied()));
        let verdict = assess(Figures::of_edge(edge), &history, objectives.of_edge(edge));
        edge.health = verdict.health;
        edge.amplified = verdict.amplified;
    }
    let mut calls: HashMap<&str, Vec<(&str, &Health)>> = HashMap::new();
    for edge in &snapshot.edges {
        if edge.health.level != HealthLevel::Ok {
            calls
                .entry(edge.source.as_str())
                .or_default()
                .push((edge.target.as_str(), &edge.health));
        }
    }
    let mut own_health = OwnHealth::new();
    for node in &mut snapshot.nodes {
        let key = node_key(&node.id);
        history.clear();
        history.extend(baseline.iter().filter_map(|b| b.nodes.get(&key).copied()));
        let own = judge(
            Figures::of_node(node),
            &history,
            objectives.services.get(&node.id),
        );
        if own.level != HealthLevel::Ok {
            own_health.insert(node.id.clone(), own.clone());
        }
        let outgoing = calls.get(node.id.as_str()).map_or(&[][..], Vec::as_slice);
        node.health = judge_node(own, outgoing);
    }
    own_health
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(calls: u64, errors: u64, p95_ms: f64) -> Figures {
        Figures {
            calls,
            errors,
            p95_ms,
            p99_ms: p95_ms * 1.2,
            amplification: 0.0,
        }
    }

    /// An edge of 100 steady calls of 50 ms at `amplification` calls per caller.
    fn amplified(calls: u64, amplification: f64) -> Figures {
        Figures {
            amplification,
            ..figures(calls, 0, 50.0)
        }
    }

    /// The verdict rendered as "level amplified|-: reason; reason".
    fn check_amplification(window: Figures, baseline: &[Figures], expected: &str) {
        let verdict = assess(window, baseline, None);
        let got = format!(
            "{} {}: {}",
            verdict.health.level.as_str(),
            if verdict.amplified { "amplified" } else { "-" },
            verdict.health.reasons.join("; ")
        );
        assert_eq!(got.trim_end_matches(": "), expected, "{window:?}");
    }

    /// Ten steady sub-windows: 500 calls (enough for a p99), `errors` errors in each hundred,
    /// p95 around `p95_ms` (±2%).
    fn steady(errors: u64, p95_ms: f64) -> Vec<Figures> {
        (0..10)
            .map(|i| figures(500, 5 * errors, p95_ms * (0.98 + 0.004 * i as f64)))
            .collect()
    }

    /// The verdict and reasons rendered as "level: reason; reason".
    fn check(window: Figures, baseline: &[Figures], objective: Option<&Objective>, expected: &str) {
        let health = judge(window, baseline, objective);
        let got = format!("{}: {}", health.level.as_str(), health.reasons.join("; "));
        assert_eq!(got.trim_end_matches(": "), expected, "{window:?}");
    }

    #[test]
    fn an_element_is_judged_against_its_own_baseline() {
        let base = steady(0, 100.0);
        check(figures(600, 0, 101.0), &base, None, "ok");
        // Four times slower.
        check(
            figures(600, 0, 400.0),
            &base,
            None,
            "degraded: p95 400 ms above its limit 150 ms (baseline 100 ms); p99 480 ms above its limit 180 ms (baseline 120 ms)",
        );
        // Errors where there were none: 3% is beyond the 2-point margin, 10% beyond twice it.
        check(
            figures(300, 9, 100.0),
            &base,
            None,
            "degraded: error rate 3.0% above its limit 2.0% (baseline 0.0%)",
        );
        check(
            figures(300, 30, 100.0),
            &base,
            None,
            "failing: error rate 10.0% above its limit 2.0% (baseline 0.0%)",
        );
        // An edge that always fails 5% is not news at 6%.
        check(figures(300, 18, 100.0), &steady(5, 100.0), None, "ok");
    }

    #[test]
    fn quiet_elements_and_thin_baselines_do_not_flap() {
        let base = steady(0, 100.0);
        // Too few calls in the window: ok whatever its figures.
        check(figures(19, 19, 9_000.0), &base, None, "ok");
        // Two errors are not a verdict.
        check(figures(20, 2, 100.0), &base, None, "ok");
        // Sub-windows under the minimum traffic do not count: no limits from them.
        let quiet: Vec<Figures> = (0..10).map(|_| figures(9, 0, 10.0)).collect();
        check(figures(300, 0, 400.0), &quiet, None, "ok");
        // Four usable sub-windows are too few for limits.
        check(figures(300, 0, 400.0), &base[..4], None, "ok");
        // A 1 ms edge at 4 ms is within the absolute floor.
        check(figures(300, 0, 4.0), &steady(0, 1.0), None, "ok");
        assert_eq!((min_calls_for(0.95), min_calls_for(0.99)), (60, 300));
        // A quantile over too few calls is the slowest call or two: not judged. 50 calls
        // judge neither; 100 judge the p95 but not the p99.
        let tail = |calls, p95_ms, p99_ms| Figures {
            p99_ms,
            ..figures(calls, 0, p95_ms)
        };
        check(tail(50, 400.0, 480.0), &base, None, "ok");
        check(tail(100, 100.0, 480.0), &base, None, "ok");
        check(
            tail(100, 400.0, 480.0),
            &base,
            None,
            "degraded: p95 400 ms above its limit 150 ms (baseline 100 ms)",
        );
        // Nor are baseline sub-windows too quiet for the quantile: no p99 limits from 200.
        let p95_only: Vec<Figures> = base.iter().map(|f| Figures { calls: 200, ..*f }).collect();
        check(tail(600, 100.0, 480.0), &p95_only, None, "ok");
    }

    #[test]
    fn a_high_error_rate_is_failing_without_a_baseline() {
        check(
            figures(100, 40, 10.0),
            &[],
            None,
            "failing: error rate 40.0% above 20.0%",
        );
        check(figures(100, 15, 10.0), &[], None, "ok");
    }

    #[test]
    fn breaching_an_objective_is_degraded() {
        let objective = Objective {
            service: "payments".into(),
            p95_ms: Some(50.0),
            error_rate: Some(0.01),
            ..Objective::default()
        };
        check(
            figures(100, 3, 60.0),
            &steady(3, 60.0),
            Some(&objective),
            "degraded: p95 60 ms above its objective 50 ms; error rate 3.0% above its objective 1.0%",
        );
        check(figures(100, 0, 40.0), &[], Some(&objective), "ok");
    }

    #[test]
    fn a_node_is_as_bad_as_the_calls_it_makes() {
        let failing = Health {
            level: HealthLevel::Failing,
            reasons: vec!["error rate 40.0% above 20.0%".into()],
        };
        let ok = Health::default();
        let node = judge_node(
            Health::default(),
            &[("card-processor", &failing), ("ledger", &ok)],
        );
        assert_eq!(node.level, HealthLevel::Failing);
        assert_eq!(
            node.reasons,
            ["calls to card-processor: error rate 40.0% above 20.0%"]
        );
        let degraded_own = Health {
            level: HealthLevel::Degraded,
            reasons: vec!["p95 400 ms above its limit 152 ms (baseline 101 ms)".into()],
        };
        let node = judge_node(degraded_own, &[("card-processor", &failing)]);
        assert_eq!(node.level, HealthLevel::Failing);
        assert_eq!(node.reasons.len(), 2);
        assert!(node.reasons[0].starts_with("calls to card-processor"));
        // Many failing calls: the reasons stay short.
        let many: Vec<(&str, &Health)> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|t| (*t, &failing))
            .collect();
        let node = judge_node(Health::default(), &many);
        assert_eq!(node.reasons.len(), 4);
        assert_eq!(node.reasons[3], "and 2 more");
    }

    #[test]
    fn a_retry_storm_is_judged_against_the_edges_own_calls_per_caller() {
        // The city's payments -> card-processor: about 1.1 calls per caller, jittering.
        let base: Vec<Figures> = (0..10)
            .map(|i| amplified(100, 1.05 + 0.01 * i as f64))
            .collect();
        check_amplification(amplified(300, 1.12), &base, "ok -");
        check_amplification(amplified(300, 1.25), &base, "ok -");
        // Retries = 3 during its incident.
        check_amplification(
            amplified(300, 2.1),
            &base,
            "degraded amplified: calls per caller ×2.1 above its limit ×1.3 (baseline ×1.1)",
        );
        check_amplification(
            amplified(300, 1.6),
            &base,
            "degraded amplified: calls per caller ×1.6 above its limit ×1.3 (baseline ×1.1)",
        );
        // A fan-out of five that has always been five (± one) is not news at six.
        let fan_out: Vec<Figures> = (0..10)
            .map(|i| amplified(100, if i % 2 == 0 { 4.0 } else { 6.0 }))
            .collect();
        check_amplification(amplified(300, 6.0), &fan_out, "ok -");
        // An edge that always made exactly one call per caller: a fifth retried is the floor.
        let one: Vec<Figures> = (0..10).map(|_| amplified(100, 1.0)).collect();
        check_amplification(amplified(300, 1.15), &one, "ok -");
        check_amplification(
            amplified(300, 1.5),
            &one,
            "degraded amplified: calls per caller ×1.5 above its limit ×1.2 (baseline ×1.0)",
        );
    }

    #[test]
    fn amplification_needs_traffic_and_a_baseline() {
        let one: Vec<Figures> = (0..10).map(|_| amplified(100, 1.0)).collect();
        // Too few calls in the window.
        check_amplification(amplified(19, 3.0), &one, "ok -");
        // Sub-windows under the minimum traffic, or too few of them, or callers unknown.
        let quiet: Vec<Figures> = (0..10).map(|_| amplified(9, 1.0)).collect();
        check_amplification(amplified(300, 3.0), &quiet, "ok -");
        check_amplification(amplified(300, 3.0), &one[..4], "ok -");
        let unknown: Vec<Figures> = (0..10).map(|_| amplified(100, 0.0)).collect();
        check_amplification(amplified(300, 3.0), &unknown, "ok -");
        // Unknown in the window.
        check_amplification(amplified(300, 0.0), &one, "ok -");
        // An amplified edge that also fails: the worse verdict wins, the flag stays.
        let verdict = assess(
            Figures {
                errors: 90,
                ..amplified(300, 3.0)
            },
            &one,
            None,
        );
        assert_eq!(verdict.health.level, HealthLevel::Failing);
        assert!(verdict.amplified);
    }
}

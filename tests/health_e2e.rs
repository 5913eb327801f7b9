//! Health end to end: a shop sent over OTLP/gRPC with timestamps in the past, whose
//! checkout → inventory calls become four times slower in the last minutes. `/api/graph`, the
//! event stream and the `nodes`/`edges` tables say that edge is degraded, and so is checkout
//! (it makes the slow calls), while the steady edges stay ok; a service over its configured
//! objective is degraded too.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Server;
use common::spans::Spans;
use common::topology::SERVER;
use serde_json::Value;

const SECOND_NS: u64 = 1_000_000_000;
const MINUTE_NS: u64 = 60 * SECOND_NS;
/// One trace every this often, from 55 to 16 minutes ago (the baseline, as health cuts it:
/// five-minute sub-windows in the hour before the 15-minute window) and from 10 to 1 minutes
/// ago (the window).
const EVERY_NS: u64 = 5 * SECOND_NS;

/// frontend → checkout → inventory and frontend → catalog, one trace every five seconds over
/// `[from_ns, to_ns)`; inventory answers in `inventory_ms` (a little jitter on every call, as
/// real latencies have).
fn shop(spans: &mut Spans, from_ns: u64, to_ns: u64, inventory_ms: u64) {
    let mut at = from_ns;
    while at < to_ns {
        let jitter = spans.next_id % 3;
        let mut trace = vec![0x4E; 16];
        trace[8..].copy_from_slice(&spans.id().to_be_bytes());
        let root = spans.add("frontend", &trace, None, SERVER, at, 200, false);
        let checkout = spans.call(
            "frontend",
            "checkout",
            &trace,
            &root,
            at + 1_000_000,
            150,
            false,
        );
        spans.call(
            "checkout",
            "inventory",
            &trace,
            &checkout,
            at + 2_000_000,
            inventory_ms + jitter,
            false,
        );
        spans.call(
            "frontend",
            "catalog",
            &trace,
            &root,
            at + 3_000_000,
            20 + jitter,
            false,
        );
        at += EVERY_NS;
    }
}

fn graph(server: &Server) -> Value {
    reqwest::blocking::get(format!("http://{}/api/graph", server.api))
        .unwrap()
        .json()
        .unwrap()
}

fn edge<'a>(graph: &'a Value, source: &str, target: &str) -> &'a Value {
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == source && e["target"] == target)
        .unwrap_or_else(|| panic!("no edge {source} -> {target}: {graph:#}"))
}

fn node<'a>(graph: &'a Value, id: &str) -> &'a Value {
    graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node {id}: {graph:#}"))
}

/// `health` and the first reason.
fn health(element: &Value) -> (String, String) {
    (
        element["health"].as_str().unwrap().to_string(),
        element["health_reasons"][0]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn a_slower_edge_and_its_caller_are_degraded_and_steady_ones_stay_ok() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flowscope.toml");
    std::fs::write(
        &config,
        "[[objective]]\nservice = \"catalog\"\np95_ms = 10\n",
    )
    .unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--graph-pairing-ttl",
            "2s",
        ],
    );
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut spans = Spans::default();
    shop(
        &mut spans,
        now_ns - 55 * MINUTE_NS,
        now_ns - 16 * MINUTE_NS,
        20,
    );
    shop(&mut spans, now_ns - 10 * MINUTE_NS, now_ns - MINUTE_NS, 80);
    server.export(spans.requests());

    // The graph takes the spans within a second or so of their acknowledgement.
    let window_calls = 9 * MINUTE_NS / EVERY_NS;
    let deadline = Instant::now() + Duration::from_secs(20);
    let settled = loop {
        let current = graph(&server);
        let calls = |s, t| {
            current["edges"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["source"] == s && e["target"] == t)
                .and_then(|e| e["calls"].as_u64())
        };
        if calls("checkout", "inventory") == Some(window_calls)
            && calls("frontend", "catalog") == Some(window_calls)
        {
            break current;
        }
        assert!(Instant::now() < deadline, "the graph did not settle");
        std::thread::sleep(Duration::from_millis(100));
    };

    let slow = health(edge(&settled, "checkout", "inventory"));
    assert_eq!(slow.0, "degraded", "{slow:?}");
    assert!(
        slow.1.starts_with("p95 ") && slow.1.contains("above its limit"),
        "{slow:?}"
    );
    let caller = health(node(&settled, "checkout"));
    assert_eq!(caller.0, "degraded", "{caller:?}");
    assert!(
        caller.1.starts_with("calls to inventory: p95 "),
        "{caller:?}"
    );
    for (source, target) in [("frontend", "checkout"), ("frontend", "catalog")] {
        assert_eq!(
            health(edge(&settled, source, target)),
            ("ok".to_string(), String::new()),
            "{source} -> {target}"
        );
    }
    assert_eq!(health(node(&settled, "frontend")).0, "ok");
    let objective = health(node(&settled, "catalog"));
    assert_eq!(objective.0, "degraded");
    assert!(
        objective.1.contains("above its objective 10 ms"),
        "{objective:?}"
    );

    // The same verdicts in SQL...
    let rows = server.sql(
        "SELECT source, target, health, health_reason FROM edges \
         WHERE health <> 'ok' ORDER BY source, target",
    )["rows"]
        .clone();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0][0], "checkout");
    assert_eq!(rows[0][1], "inventory");
    assert_eq!(rows[0][2], "degraded");
    let rows =
        server.sql("SELECT id, health FROM nodes WHERE health <> 'ok' ORDER BY id")["rows"].clone();
    let degraded: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(degraded, ["catalog", "checkout", "inventory"]);

    // ...and in the event stream's snapshot.
    let stream = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://{}/api/graph/stream", server.api))
        .send()
        .unwrap();
    let data = BufReader::new(stream)
        .lines()
        .map(Result::unwrap)
        .find_map(|line| line.strip_prefix("data:").map(|d| d.trim().to_string()))
        .unwrap();
    let snapshot: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        health(edge(&snapshot, "checkout", "inventory")).0,
        "degraded"
    );
    assert_eq!(health(node(&snapshot, "checkout")).0, "degraded");
}

/// orders → payments → card-processor, one trace every five seconds over `[from_ns, to_ns)`;
/// payments calls the card processor again in `retried` of every ten traces (the first call
/// failed and was retried).
fn payments(spans: &mut Spans, from_ns: u64, to_ns: u64, retried: u64) {
    let mut at = from_ns;
    let mut n = 0;
    while at < to_ns {
        let mut trace = vec![0x7A; 16];
        trace[8..].copy_from_slice(&spans.id().to_be_bytes());
        let root = spans.add("orders", &trace, None, SERVER, at, 100, false);
        let pay = spans.call(
            "orders",
            "payments",
            &trace,
            &root,
            at + 1_000_000,
            60,
            false,
        );
        let retries = if n % 10 < retried { 1 } else { 0 };
        for attempt in 0..=retries {
            let start = at + 2_000_000 + attempt * 20_000_000;
            spans.call("payments", "card-processor", &trace, &pay, start, 15, false);
        }
        n += 1;
        at += EVERY_NS;
    }
}

#[test]
fn a_retry_storm_edge_is_amplified_and_steady_edges_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--graph-pairing-ttl", "2s"]);
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut spans = Spans::default();
    // About 1.1 calls per caller in the baseline, 1.7 in the window.
    payments(
        &mut spans,
        now_ns - 55 * MINUTE_NS,
        now_ns - 16 * MINUTE_NS,
        1,
    );
    payments(&mut spans, now_ns - 10 * MINUTE_NS, now_ns - MINUTE_NS, 7);
    server.export(spans.requests());

    let window_traces = 9 * MINUTE_NS / EVERY_NS;
    let deadline = Instant::now() + Duration::from_secs(20);
    let settled = loop {
        let current = graph(&server);
        let calls = |s, t| {
            current["edges"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["source"] == s && e["target"] == t)
                .and_then(|e| e["calls"].as_u64())
        };
        // Calls per caller are counted when a trace is finalized (the pairing TTL later).
        let amplification = current["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"] == "payments" && e["target"] == "card-processor")
            .and_then(|e| e["amplification"].as_f64())
            .unwrap_or_default();
        if calls("orders", "payments") == Some(window_traces)
            && calls("payments", "card-processor").is_some_and(|c| c > window_traces * 3 / 2)
            && amplification > 1.5
        {
            break current;
        }
        assert!(Instant::now() < deadline, "the graph did not settle");
        std::thread::sleep(Duration::from_millis(100));
    };

    let storm = edge(&settled, "payments", "card-processor");
    assert_eq!(storm["amplified"], true, "{storm}");
    let (level, reason) = health(storm);
    assert_eq!(level, "degraded", "{storm}");
    assert!(
        reason.starts_with("calls per caller ×1.7 above its limit ×1.3 (baseline ×1.1)"),
        "{storm}"
    );
    let steady = edge(&settled, "orders", "payments");
    assert_eq!(steady["amplified"], false, "{steady}");
    assert_eq!(health(steady), ("ok".to_string(), String::new()));
    let caller = health(node(&settled, "payments"));
    assert_eq!(caller.0, "degraded", "{caller:?}");
    assert!(
        caller
            .1
            .starts_with("calls to card-processor: calls per caller")
    );

    // The same flag in SQL, and unjudged (false) in a diff between two windows.
    let rows = server.sql("SELECT source, target FROM edges WHERE amplified ORDER BY 1, 2")["rows"]
        .clone();
    assert_eq!(rows, serde_json::json!([["payments", "card-processor"]]));
    let diff: Value = reqwest::blocking::get(format!(
        "http://{}/api/graph/diff?after_from=15m&before_from=45m&before_to=30m&ratio=1.5",
        server.api
    ))
    .unwrap()
    .json()
    .unwrap();
    let changed = diff["edges_changed"].as_array().unwrap();
    assert!(
        !changed.is_empty(),
        "fewer calls in the last 15 minutes: {diff}"
    );
    assert!(
        changed
            .iter()
            .all(|c| c["after"]["amplified"] == false && c["before"]["amplified"] == false),
        "{diff}"
    );
}

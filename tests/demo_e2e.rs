//! `flowscope serve --demo`: the simulated shop's graph, with its loop through a queue,
//! appears within seconds, and its spans are in SQL.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

#[test]
fn the_demo_shows_a_living_graph_with_a_loop_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--demo"]);
    let started = Instant::now();
    let graph = loop {
        let graph: Value = reqwest::blocking::get(format!("http://{}/api/graph", server.api))
            .unwrap()
            .json()
            .unwrap();
        if !graph["loops"].as_array().unwrap().is_empty() {
            break graph;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no loop after 30 s: {graph:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut members: Vec<&str> = graph["loops"][0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    members.sort();
    assert_eq!(members, ["billing", "order-events", "orders"]);
    let targets: Vec<&str> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    for target in [
        "orders",
        "inventory",
        "orders-db",
        "order-events",
        "billing",
    ] {
        assert!(
            targets.contains(&target),
            "{target} missing from {targets:?}"
        );
    }
    assert!(server.count("SELECT count(DISTINCT service_name) FROM spans") >= 4);
}

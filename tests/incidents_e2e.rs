//! Incidents end to end over the `city` demo: an hour of its traffic, simulated with
//! timestamps in the past and sent over OTLP/gRPC, with its two scheduled incidents moved to
//! known minutes: payments → card-processor failing 40% with retries (an error burst and a
//! retry storm) half an hour in, and dispatch → drivers four times slower (latency only) in
//! the last minute, still going on: what an alert raised now sees in its graph context. During each,
//! `/api/incidents` reports one incident whose top-ranked likely cause is the planted edge,
//! and `/api/graph` judges that edge degraded or failing; in the quiet minutes between them
//! no incident is reported at all (the false positives are counted; the goal is zero).

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::Server;
use common::city::{self, MINUTE, SECOND};
use serde_json::Value;

/// Minutes after the start of the traffic.
const ERRORS_AT: i64 = 30;
const ERRORS_FOR: i64 = 2;
/// The slowdown started this long before the end of the traffic, and still goes on.
const LATENCY_BEFORE_END: i64 = 60 * SECOND;
const LATENCY_FOR_S: i64 = 90;
const TRAFFIC_MINUTES: i64 = 63;

fn get(server: &Server, path: &str) -> Value {
    let response = reqwest::blocking::get(format!("http://{}{path}", server.api)).unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().unwrap()
}

fn incidents(server: &Server, from_ns: i64, to_ns: i64) -> Value {
    get(
        server,
        &format!(
            "/api/incidents?from={}&to={}",
            from_ns / 1_000_000,
            to_ns / 1_000_000
        ),
    )
}

fn edge_health(server: &Server, from_ns: i64, to_ns: i64, source: &str, target: &str) -> Value {
    let graph = get(
        server,
        &format!(
            "/api/graph?from={}&to={}",
            from_ns / 1_000_000,
            to_ns / 1_000_000
        ),
    );
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == source && e["target"] == target)
        .unwrap_or_else(|| panic!("no edge {source} -> {target}"))
        .clone()
}

/// The incidents of the five minutes before `to_ns`: what the dashboard asks at `to_ns`.
fn at(server: &Server, to_ns: i64) -> Vec<Value> {
    incidents(server, to_ns - 5 * MINUTE, to_ns)["incidents"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn each_planted_incident_is_one_incident_caused_by_its_edge_and_quiet_minutes_have_none() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    // Health's baseline is cut in five-minute steps: start on one.
    let start = (now - TRAFFIC_MINUTES * MINUTE).div_euclid(5 * MINUTE) * 5 * MINUTE;
    let errors_at = start + ERRORS_AT * MINUTE;
    let latency_at = now - LATENCY_BEFORE_END;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--graph-pairing-ttl", "2s", "--graph-horizon", "2h"],
    );
    city::send(&server, city::city(errors_at, latency_at), start, now);

    // During the error burst and retry storm, 90 s in.
    let during = errors_at + 90 * SECOND;
    let found = at(&server, during);
    assert_eq!(found.len(), 1, "one incident: {found:#?}");
    let incident = &found[0];
    assert_eq!(incident["rank"], 1);
    assert_eq!(
        incident["cause"]["name"], "payments -> card-processor",
        "{incident:#}"
    );
    assert!(
        ["degraded", "failing"].contains(&incident["level"].as_str().unwrap()),
        "{incident:#}"
    );
    let started = incident["started_ms"].as_i64().unwrap() * 1_000_000;
    assert!(
        (started - errors_at).abs() <= MINUTE,
        "started {} s from the planted start: {incident:#}",
        (started - errors_at) / SECOND
    );
    assert!(
        incident["after"]["error_rate"].as_f64().unwrap()
            > incident["before"]["error_rate"].as_f64().unwrap() + 0.1,
        "{incident:#}"
    );
    assert!(
        !incident["example_traces"].as_array().unwrap().is_empty(),
        "{incident:#}"
    );
    let card = edge_health(
        &server,
        during - 5 * MINUTE,
        during,
        "payments",
        "card-processor",
    );
    assert_ne!(card["health"], "ok", "{card:#}");
    // Payments retries each failed charge: a retry storm, flagged on the edge.
    assert_eq!(card["amplified"], true, "{card:#}");

    // The same incident in SQL.
    let rows = server.sql(&format!(
        "SELECT rank, cause, level FROM incidents(to_timestamp_millis({}), to_timestamp_millis({}))",
        (during - 5 * MINUTE) / 1_000_000,
        during / 1_000_000
    ))["rows"]
        .clone();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0][1], "payments -> card-processor", "{rows}");

    // During the latency-only slowdown, 60 s in: now.
    let during = now;
    let found = at(&server, during);
    assert_eq!(found[0]["ongoing"], true, "{:#}", found[0]);
    assert_eq!(found.len(), 1, "one incident: {found:#?}");
    assert_eq!(
        found[0]["cause"]["name"], "dispatch -> drivers",
        "{:#}",
        found[0]
    );
    let drivers = edge_health(&server, during - 5 * MINUTE, during, "dispatch", "drivers");
    assert_ne!(drivers["health"], "ok", "{drivers:#}");
    assert!(
        found[0]["path"]
            .as_array()
            .unwrap()
            .ends_with(&[Value::from("dispatch"), Value::from("drivers")]),
        "{:#}",
        found[0]
    );

    // What an alert on that edge, or on its caller, carries as graph context: the incident.
    for subject in ["'dispatch -> drivers'", "'dispatch'"] {
        let rows = server.sql(&format!(
            "SELECT summary FROM incidents(now() - INTERVAL '5 minutes', now()) \
             WHERE array_has(elements, {subject}) ORDER BY rank LIMIT 1"
        ))["rows"]
            .clone();
        let summary = rows[0][0].as_str().unwrap_or_default();
        assert!(
            summary.starts_with("likely cause: dispatch -> drivers (degraded: p95 "),
            "{subject}: {rows}"
        );
    }

    // Quiet minutes: every five-minute window that holds neither incident, once the baseline
    // has its five sub-windows, at one-minute steps. Each window is five minutes of traffic;
    // together they cover more than twenty quiet minutes.
    let errors_end = errors_at + ERRORS_FOR * MINUTE;
    let latency_end = latency_at + LATENCY_FOR_S * SECOND;
    let mut windows = 0;
    let mut false_positives = Vec::new();
    let mut to = start + 26 * MINUTE;
    while to < latency_at {
        let from = to - 5 * MINUTE;
        let overlaps = |a: i64, b: i64| from < b && a < to;
        if !overlaps(errors_at, errors_end) && !overlaps(latency_at, latency_end) {
            windows += 1;
            for incident in at(&server, to) {
                false_positives.push(format!(
                    "{} min: {}",
                    (to - start) / MINUTE,
                    incident["summary"]
                ));
            }
        }
        to += MINUTE;
    }
    assert!(windows >= 20, "only {windows} quiet windows");
    assert!(
        false_positives.is_empty(),
        "{} false positives in {windows} quiet windows:\n{}",
        false_positives.len(),
        false_positives.join("\n")
    );
}

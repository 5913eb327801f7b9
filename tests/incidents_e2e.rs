//! Incidents end to end over the `city` demo: an hour of its traffic, simulated with
//! timestamps in the past and sent over OTLP/gRPC, with its two scheduled incidents moved to
//! known minutes: payments → card-processor failing 40% with retries (an error burst and a
//! retry storm) and dispatch → drivers four times slower (latency only). During each,
//! `/api/incidents` reports one incident whose top-ranked likely cause is the planted edge,
//! and `/api/graph` judges that edge degraded or failing; in the quiet minutes between them
//! no incident is reported at all (the false positives are counted; the goal is zero).

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Server;
use flowscope_demo::{Simulator, Topology};
use serde_json::Value;

const SECOND: i64 = 1_000_000_000;
const MINUTE: i64 = 60 * SECOND;
/// The city preset runs 20 root traces a second; a fifth of that keeps the test to seconds
/// and still gives every edge of the incidents well over health's minimum traffic.
const SCALE: f64 = 0.2;
/// Minutes after the start of the traffic.
const ERRORS_AT: i64 = 30;
const ERRORS_FOR: i64 = 2;
const LATENCY_AT: i64 = 42;
const LATENCY_FOR_S: i64 = 90;
const TRAFFIC_MINUTES: i64 = 63;

/// The city preset with its two incidents moved to `errors_ns` and `latency_ns` (once a day,
/// so once in the test).
fn city(errors_ns: i64, latency_ns: i64) -> Topology {
    let day = 86_400 * SECOND;
    let offset = |ns: i64| format!("offset = \"{}s\"", ns.rem_euclid(day) / SECOND);
    let text = include_str!("../demo/presets/city.toml");
    let moved = text
        .replace(
            "every = \"15m\"\nlength = \"2m\"",
            &format!("every = \"1d\"\n{}\nlength = \"2m\"", offset(errors_ns)),
        )
        .replace(
            "every = \"20m\"\noffset = \"5m\"\nlength = \"90s\"",
            &format!("every = \"1d\"\n{}\nlength = \"90s\"", offset(latency_ns)),
        );
    assert_ne!(moved, text, "the city preset's incidents moved");
    assert!(moved.matches("every = \"1d\"").count() == 2, "{moved}");
    Topology::parse(&moved, "city (test)").unwrap()
}

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
    let latency_at = start + LATENCY_AT * MINUTE;
    let mut simulator = Simulator::new(city(errors_at, latency_at), 7);

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--graph-pairing-ttl", "2s", "--graph-horizon", "2h"],
    );
    let mut requests = Vec::new();
    let mut spans = 0;
    let mut second = start + SECOND;
    while second <= now {
        let rate = simulator.topology().traces_per_second_at(second) * SCALE;
        let request = simulator.request(second, rate.round().max(1.0) as u32);
        spans += flowscope_demo::send::span_count(&request);
        requests.push(request);
        second += SECOND;
    }
    server.export(requests);

    // Ready when the graph has taken every span and paired what it could.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = get(&server, "/api/status");
        let graph = &status["graph"];
        if graph["spans_seen"].as_u64() == Some(spans) && graph["pending_spans"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the graph did not take the {spans} spans: {graph}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

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

    // The same incident in SQL.
    let rows = server.sql(&format!(
        "SELECT rank, cause, level FROM incidents(to_timestamp_millis({}), to_timestamp_millis({}))",
        (during - 5 * MINUTE) / 1_000_000,
        during / 1_000_000
    ))["rows"]
        .clone();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0][1], "payments -> card-processor", "{rows}");

    // During the latency-only slowdown, 60 s in.
    let during = latency_at + 60 * SECOND;
    let found = at(&server, during);
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

    // Quiet minutes: every five-minute window that holds neither incident, once the baseline
    // has its five sub-windows, at one-minute steps. Each window is five minutes of traffic;
    // together they cover more than twenty quiet minutes.
    let errors_end = errors_at + ERRORS_FOR * MINUTE;
    let latency_end = latency_at + LATENCY_FOR_S * SECOND;
    let mut windows = 0;
    let mut false_positives = Vec::new();
    let mut to = start + 26 * MINUTE;
    while to <= now - MINUTE {
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

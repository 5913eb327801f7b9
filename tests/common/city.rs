//! The `city` demo's traffic with simulated timestamps: its two scheduled incidents moved to
//! given times, sent over OTLP/gRPC, and a wait until the live graph has taken every span.

use std::time::{Duration, Instant};

use flowscope_demo::{Simulator, Topology};
use serde_json::Value;

use super::Server;

pub const SECOND: i64 = 1_000_000_000;
pub const MINUTE: i64 = 60 * SECOND;
/// The city preset runs 20 root traces a second; a fifth of that keeps a test to seconds
/// and still gives every edge of the incidents well over health's minimum traffic.
const SCALE: f64 = 0.2;

/// The city preset with its incidents moved: payments → card-processor failing (with
/// retries) for 2 minutes from `errors_ns`, dispatch → drivers four times slower for 90 s
/// from `latency_ns` (once a day each, so once in a test).
pub fn city(errors_ns: i64, latency_ns: i64) -> Topology {
    let day = 86_400 * SECOND;
    let offset = |ns: i64| format!("offset = \"{}s\"", ns.rem_euclid(day) / SECOND);
    let text = include_str!("../../demo/presets/city.toml");
    let moved = text
        .replace(
            "every = \"15m\"\nlength = \"2m\"",
            &format!("every = \"1d\"\n{}\nlength = \"2m\"", offset(errors_ns)),
        )
        .replace(
            "every = \"20m\"\noffset = \"5m\"\nlength = \"90s\"",
            &format!("every = \"1d\"\n{}\nlength = \"90s\"", offset(latency_ns)),
        );
    assert_eq!(
        moved.matches("every = \"1d\"").count(),
        2,
        "the city preset's incidents moved"
    );
    Topology::parse(&moved, "city (test)").expect("the moved city preset parses")
}

/// Sends the city's traffic, one request per simulated second in `(from_ns, to_ns]`, and
/// waits until the live graph has taken (and paired) every span. Returns the span count.
pub fn send(server: &Server, topology: Topology, from_ns: i64, to_ns: i64) -> u64 {
    let mut simulator = Simulator::new(topology, 7);
    let mut requests = Vec::new();
    let mut spans = 0;
    let mut second = from_ns + SECOND;
    while second <= to_ns {
        let rate = simulator.topology().traces_per_second_at(second) * SCALE;
        let request = simulator.request(second, rate.round().max(1.0) as u32);
        spans += flowscope_demo::send::span_count(&request);
        requests.push(request);
        second += SECOND;
    }
    server.export(requests);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: Value = reqwest::blocking::get(format!("http://{}/api/status", server.api))
            .expect("the API answers")
            .json()
            .expect("status is JSON");
        let graph = &status["graph"];
        if graph["spans_seen"].as_u64() == Some(spans) && graph["pending_spans"] == 0 {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "the graph did not take the {spans} spans: {graph}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

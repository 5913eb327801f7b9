//! `flowscope loadgen` against a running `flowscope serve`: what it reports as acknowledged is
//! exactly what SQL finds, at the rate it was asked for, over gRPC and over HTTP/JSON+gzip; an
//! endpoint where nothing listens is a non-zero exit that says what to do.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

const RATE: f64 = 1500.0;

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowscope"))
        .arg("loadgen")
        .args(args)
        .output()
        .expect("run flowscope loadgen")
}

/// Runs loadgen for 2 s at `RATE` with `args`, and returns its JSON report.
fn run_at_rate(args: &[&str]) -> Value {
    let rate = RATE.to_string();
    let mut all = vec![
        "--rate",
        &rate,
        "--duration",
        "2s",
        "--batch-spans",
        "100",
        "--json",
    ];
    all.extend_from_slice(args);
    let output = loadgen(&all);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadgen failed:\n{stderr}");
    assert!(
        stderr.contains("spans/s"),
        "a progress line or the plan on stderr:\n{stderr}"
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// Waits until `sql` counts `expected` (spans are visible once acknowledged, edges within a
/// second; the wait only absorbs a slow machine) and returns the last count.
fn count_when_visible(server: &Server, sql: &str, expected: i64) -> i64 {
    let started = Instant::now();
    loop {
        let counted = server.count(sql);
        if counted == expected || started.elapsed() > Duration::from_secs(10) {
            return counted;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn check_report(report: &Value, server: &Server) {
    let acked = report["spans_acked"].as_i64().unwrap();
    assert!(acked > 0, "{report:#}");
    assert_eq!(report["spans_sent"].as_i64().unwrap(), acked, "{report:#}");
    assert_eq!(report["requests_failed"], 0, "{report:#}");
    assert_eq!(report["requests_rejected"], 0, "{report:#}");
    let counted = count_when_visible(server, "SELECT count(*) FROM spans", acked);
    assert_eq!(counted, acked, "{report:#}");
    let achieved = report["spans_per_second"].as_f64().unwrap();
    assert!(
        (achieved - RATE).abs() < 0.2 * RATE,
        "achieved {achieved} spans/s for a target of {RATE}: {report:#}"
    );
    assert!(report["ack_p50_ms"].as_f64().unwrap() > 0.0, "{report:#}");
    assert!(
        report["client_cpu_seconds"].as_f64().is_some(),
        "{report:#}"
    );
}

#[test]
fn acknowledged_spans_over_grpc_are_exactly_the_spans_sql_counts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let report = run_at_rate(&["--endpoint", &server.grpc_url(), "--topology", "city"]);
    assert_eq!(report["protocol"], "grpc");
    check_report(&report, &server);
}

#[test]
fn acknowledged_spans_over_http_json_gzip_are_exactly_the_spans_sql_counts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let endpoint = format!("http://{}", server.http);
    let report = run_at_rate(&[
        "--endpoint",
        &endpoint,
        "--protocol",
        "http",
        "--encoding",
        "json",
        "--gzip",
    ]);
    assert_eq!(report["encoding"], "json");
    assert_eq!(report["gzip"], true);
    check_report(&report, &server);
    // The shop's graph came through the JSON path whole, loop included.
    let loops = count_when_visible(&server, "SELECT count(*) FROM feedback_loops", 1);
    assert_eq!(loops, 1);
}

#[test]
fn an_unreachable_endpoint_exits_non_zero_and_says_what_to_do() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for protocol in ["grpc", "http"] {
        let endpoint = format!("http://127.0.0.1:{port}");
        let output = loadgen(&[
            "--endpoint",
            &endpoint,
            "--protocol",
            protocol,
            "--duration",
            "1s",
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{protocol}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot reach {endpoint}"))
                && stderr.contains("is flowscope running? start it with `flowscope serve`"),
            "{protocol}: {stderr}"
        );
    }
}

#[test]
fn json_over_grpc_and_unknown_topologies_are_refused_before_sending() {
    let output = loadgen(&["--protocol", "grpc", "--encoding", "json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("use --protocol http"), "{stderr}");

    let output = loadgen(&["--topology", "no-such-preset"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("not a preset (shop, city, generated:N)"),
        "{stderr}"
    );
}

#[test]
fn incident_now_starts_the_scheduled_incident_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let report = run_at_rate(&["--endpoint", &server.grpc_url(), "--incident-now"]);
    check_report(&report, &server);
    // The shop's incident fails a quarter of inventory's calls (0.5% outside it).
    let answer = server.sql(
        "SELECT avg(CASE WHEN status_code = 'ERROR' THEN 1.0 ELSE 0.0 END) AS rate, count(*) AS calls \
         FROM spans WHERE service_name = 'inventory' AND kind = 'SERVER'",
    );
    let (rate, calls) = (
        answer["rows"][0][0].as_f64().unwrap(),
        answer["rows"][0][1].as_i64().unwrap(),
    );
    assert!(calls >= 50, "{answer:#}");
    assert!(
        (0.12..0.45).contains(&rate),
        "inventory fails {rate} of {calls} calls during the incident: {answer:#}"
    );
}

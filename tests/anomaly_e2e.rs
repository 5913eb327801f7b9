//! Anomaly SQL end to end: a steady shop sent over OTLP/gRPC with timestamps in the past, an
//! error burst on one edge and a short-lived new dependency; the anomaly functions name the
//! burst's edge, node, metric and rule and leave the quiet edge alone, and the topology
//! events name the new dependency when it comes and goes.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Server;
use common::spans::Spans;
use common::topology::SERVER;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;

const MINUTE_NS: u64 = 60_000_000_000;
const BASELINE_MINUTES: u64 = 20;
const WATCHED_MINUTES: u64 = 3;
const CALLS_PER_MINUTE: u64 = 10;
/// The minute (counted from the start) in which orders calls fraud-check, and only then.
const FRAUD_CHECK_MINUTE: u64 = 21;

/// frontend → orders (never fails) → payments, which fails 0 or 1 of 10 calls a minute in
/// the baseline and 6 of 10 in the watched minutes; in one watched minute orders also calls
/// fraud-check. Every latency is fixed, so only the errors move.
fn shop(start_ns: u64) -> Vec<ExportTraceServiceRequest> {
    let mut spans = Spans::default();
    for minute in 0..BASELINE_MINUTES + WATCHED_MINUTES {
        let failing = if minute >= BASELINE_MINUTES {
            6
        } else {
            minute % 2
        };
        for i in 0..CALLS_PER_MINUTE {
            let at = start_ns + minute * MINUTE_NS + i * 5_000_000_000;
            let mut trace = vec![0xA7; 16];
            trace[8..].copy_from_slice(&spans.id().to_be_bytes());
            let root = spans.add("frontend", &trace, None, SERVER, at, 40, false);
            let orders = spans.call(
                "frontend",
                "orders",
                &trace,
                &root,
                at + 1_000_000,
                30,
                false,
            );
            spans.call(
                "orders",
                "payments",
                &trace,
                &orders,
                at + 3_000_000,
                10,
                i < failing,
            );
            if minute == FRAUD_CHECK_MINUTE {
                spans.call(
                    "orders",
                    "fraud-check",
                    &trace,
                    &orders,
                    at + 15_000_000,
                    5,
                    false,
                );
            }
        }
    }
    spans.requests()
}

fn rows(server: &Server, sql: &str) -> Vec<Vec<Value>> {
    let answer = server.sql(sql);
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().clone())
        .collect()
}

fn column_names(server: &Server, sql: &str) -> Vec<String> {
    server.sql(sql)["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string)
}

/// The statements of the SQL blocks in README's "Anomaly queries" section.
fn readme_anomaly_examples() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## Anomaly queries").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    let statements: Vec<String> = section
        .split("```sql")
        .skip(1)
        .flat_map(|block| block.split("```").next().unwrap().split(';'))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    assert!(statements.len() >= 5, "{statements:?}");
    statements
}

#[test]
fn anomaly_functions_find_the_injected_burst_and_the_new_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // Whole minutes, ending a few minutes ago: within the graph's hour, and every bucket over.
    let start_ns = (now_ns / MINUTE_NS - BASELINE_MINUTES - WATCHED_MINUTES - 2) * MINUTE_NS;
    server.export(shop(start_ns));

    let secs = |minute: u64| (start_ns + minute * MINUTE_NS) / 1_000_000_000;
    let (from, to) = (
        secs(BASELINE_MINUTES),
        secs(BASELINE_MINUTES + WATCHED_MINUTES),
    );
    let window = format!("to_timestamp({from}), to_timestamp({to})");
    let minute_of = |column: &str| {
        format!("CAST((CAST({column} AS BIGINT) - {start_ns}) / {MINUTE_NS} AS BIGINT)")
    };

    // The graph takes the spans within a second of their acknowledgement: poll, with a deadline.
    let all_minutes = format!("to_timestamp({}), to_timestamp({to})", secs(0));
    let total = format!(
        "SELECT sum(calls) FROM edge_series('1m', {all_minutes}) WHERE target = 'payments'"
    );
    let expected = (BASELINE_MINUTES + WATCHED_MINUTES) * CALLS_PER_MINUTE;
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.sql(&total)["rows"][0][0].as_u64() != Some(expected) {
        assert!(Instant::now() < deadline, "{:?}", server.sql(&total));
        std::thread::sleep(Duration::from_millis(100));
    }

    // A series: one row per minute and edge, the numbers of that minute's edges_between.
    let series = format!("SELECT * FROM edge_series('1m', {all_minutes})");
    assert_eq!(
        column_names(&server, &series),
        [
            "bucket_start",
            "source",
            "target",
            "kind",
            "calls",
            "errors",
            "error_rate",
            "p50_ms",
            "p99_ms"
        ]
    );
    let burst_minute = rows(
        &server,
        &format!(
            "SELECT calls, errors, error_rate FROM edge_series('1m', {window}) \
             WHERE target = 'payments' ORDER BY bucket_start LIMIT 1"
        ),
    );
    assert_eq!(
        burst_minute,
        [[Value::from(10), Value::from(6), Value::from(0.6)]]
    );

    // The burst: errors and error rate beyond the limits on orders → payments, in each watched
    // minute; nothing at all on frontend → orders, which never changed.
    let anomalies = format!(
        "SELECT {}, source, target, metric, rule FROM edge_anomalies('1m', '20m', 3, {window})",
        minute_of("bucket_start")
    );
    let found: BTreeSet<(u64, String, String, String, String)> = rows(&server, &anomalies)
        .iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap(),
                text(&r[1]),
                text(&r[2]),
                text(&r[3]),
                text(&r[4]),
            )
        })
        .collect();
    for minute in BASELINE_MINUTES..BASELINE_MINUTES + WATCHED_MINUTES {
        for metric in ["errors", "error_rate"] {
            let hit = (
                minute,
                "orders".into(),
                "payments".into(),
                metric.into(),
                "beyond_limits".into(),
            );
            assert!(found.contains(&hit), "{hit:?} not in {found:?}");
        }
    }
    assert!(found.iter().all(|f| f.1 != "frontend"), "{found:?}");
    assert!(
        found.iter().all(|f| f.3 != "p50_ms" && f.3 != "p99_ms"),
        "latency never moved: {found:?}"
    );
    assert_eq!(
        column_names(
            &server,
            &format!("SELECT * FROM edge_anomalies('1m', '20m', 3, {window})")
        ),
        [
            "bucket_start",
            "source",
            "target",
            "kind",
            "metric",
            "rule",
            "value",
            "mean",
            "sigma",
            "lower",
            "upper"
        ]
    );
    // The limits the rows name are the baseline's: errors 0, 1, 0, 1, ... have mean 0.5.
    let limits = rows(
        &server,
        &format!(
            "SELECT DISTINCT mean, upper FROM edge_anomalies('1m', '20m', 3, {window}) \
             WHERE target = 'payments' AND metric = 'errors' AND rule = 'beyond_limits'"
        ),
    );
    let sigma = (20.0_f64 * 0.25 / 19.0).sqrt();
    assert_eq!(limits.len(), 1, "{limits:?}");
    assert!(
        (limits[0][0].as_f64().unwrap() - 0.5).abs() < 1e-9,
        "{limits:?}"
    );
    assert!(
        (limits[0][1].as_f64().unwrap() - (0.5 + 3.0 * sigma)).abs() < 1e-9,
        "{limits:?}"
    );

    // The node view: payments (its SERVER spans fail), not frontend or orders.
    let nodes: BTreeSet<String> = rows(
        &server,
        &format!("SELECT DISTINCT node FROM node_anomalies('1m', '20m', 3, {window}) WHERE metric = 'errors'"),
    )
    .iter()
    .map(|r| text(&r[0]))
    .collect();
    assert_eq!(nodes, BTreeSet::from(["payments".to_string()]));

    // The control chart: every defined point, the 20 baseline minutes marked as such.
    let control = rows(
        &server,
        &format!(
            "SELECT count(*), sum(CASE WHEN in_baseline THEN 1 ELSE 0 END) \
             FROM edge_control('1m', '20m', 3, {window}) \
             WHERE source = 'frontend' AND metric = 'calls'"
        ),
    );
    assert_eq!(control, [[Value::from(23), Value::from(20)]]);

    // Topology events: fraud-check appears in its minute and is gone the next.
    let events = rows(
        &server,
        &format!(
            "SELECT {}, event, subject FROM topology_events({all_minutes}, '1m') ORDER BY 1, 2, 3",
            minute_of("at")
        ),
    );
    let events: Vec<(u64, String, String)> = events
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), text(&r[1]), text(&r[2])))
        .collect();
    let minute = FRAUD_CHECK_MINUTE;
    assert_eq!(
        events,
        [
            (
                minute,
                "edge_appeared".into(),
                "orders -> fraud-check".into()
            ),
            (minute, "node_appeared".into(), "fraud-check".into()),
            (
                minute + 1,
                "edge_vanished".into(),
                "orders -> fraud-check".into()
            ),
            (minute + 1, "node_vanished".into(), "fraud-check".into()),
        ]
    );

    // Seasonal: no earlier days stored, so each figure stands alone.
    let seasonal = rows(
        &server,
        &format!(
            "SELECT metric, value, days_used, zscore FROM node_seasonal('5m', 2, to_timestamp({to})) \
             WHERE node = 'payments' AND metric = 'calls'"
        ),
    );
    // Minutes 18 to 22: 50 calls.
    assert_eq!(seasonal.len(), 1, "{seasonal:?}");
    assert_eq!(seasonal[0][1].as_f64(), Some(50.0), "{seasonal:?}");
    assert_eq!(
        (&seasonal[0][2], &seasonal[0][3]),
        (&Value::from(0), &Value::Null)
    );

    // Every example in README's "Anomaly queries" plans and runs.
    for sql in readme_anomaly_examples() {
        let (status, body) = server.sql_status(&sql);
        assert_eq!(status, 200, "{sql}: {body}");
    }

    // Arguments are checked at planning, with what to write instead.
    for (sql, says) in [
        (
            "SELECT * FROM edge_series('15s')",
            "whole multiple of the graph's 10s",
        ),
        (
            "SELECT * FROM edge_anomalies('1m')",
            "write (bucket, baseline",
        ),
        (
            "SELECT * FROM edge_anomalies('1m', '2m')",
            "lengthen the baseline",
        ),
        ("SELECT * FROM node_control('1m', '1h', -1)", "above zero"),
        (
            "SELECT * FROM topology_events(now(), now() - INTERVAL '1 hour')",
            "window is empty",
        ),
    ] {
        let (status, body) = server.sql_status(sql);
        assert_eq!(status, 400, "{sql}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{sql}: {body}"
        );
    }
}

/// `GET /api/graph/series` with `query`: the status and the JSON answer.
fn series(server: &Server, query: &str) -> (u16, Value) {
    let response =
        reqwest::blocking::get(format!("http://{}/api/graph/series?{query}", server.api))
            .expect("GET /api/graph/series");
    let status = response.status().as_u16();
    (status, response.json().expect("JSON body"))
}

/// Issue 20 (5): a panel's sparklines took 5 s (once 34 s) of SQL over spans. The graph's own
/// series answers them: every step of an edge's or a node's series is the `edge_series` /
/// `node_series` row of that bucket, a step before any span is no data, and what is wrong
/// with a request is a 400 that says what to send.
#[test]
fn the_graph_series_endpoint_answers_what_edge_series_and_node_series_do() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let start_ns = (now_ns / MINUTE_NS - BASELINE_MINUTES - WATCHED_MINUTES - 2) * MINUTE_NS;
    server.export(shop(start_ns));
    let ms = |minute: u64| (start_ns + minute * MINUTE_NS) / 1_000_000;
    // Two minutes before the first span, to the end of the last minute.
    let (from_ms, to_ms) = (ms(0) - 2 * 60_000, ms(BASELINE_MINUTES + WATCHED_MINUTES));
    let window = format!("to_timestamp_millis({from_ms}), to_timestamp_millis({to_ms})");
    let expected = (BASELINE_MINUTES + WATCHED_MINUTES) * CALLS_PER_MINUTE;
    let total =
        format!("SELECT sum(calls) FROM edge_series('1m', {window}) WHERE target = 'payments'");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.sql(&total)["rows"][0][0].as_u64() != Some(expected) {
        assert!(Instant::now() < deadline, "{:?}", server.sql(&total));
        std::thread::sleep(Duration::from_millis(100));
    }

    let figures = "calls, errors, p50_ms, p99_ms";
    let checks = [
        (
            "source=frontend&target=orders&kind=sync",
            format!(
                "SELECT CAST(bucket_start AS BIGINT) / 1000000, {figures} FROM edge_series('1m', {window}) WHERE source = 'frontend' AND target = 'orders' ORDER BY 1"
            ),
        ),
        (
            "source=orders&target=payments",
            format!(
                "SELECT CAST(bucket_start AS BIGINT) / 1000000, {figures} FROM edge_series('1m', {window}) WHERE source = 'orders' AND target = 'payments' ORDER BY 1"
            ),
        ),
        (
            "node=payments",
            format!(
                "SELECT CAST(bucket_start AS BIGINT) / 1000000, {figures} FROM node_series('1m', {window}) WHERE node = 'payments' ORDER BY 1"
            ),
        ),
    ];
    for (element, sql) in checks {
        let (status, answer) = series(
            &server,
            &format!("{element}&from={from_ms}&to={to_ms}&step=1m"),
        );
        assert_eq!(status, 200, "{element}: {answer}");
        assert_eq!(answer["step_s"], 60.0, "{answer}");
        let starts: Vec<u64> = answer["start_ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let minutes = (BASELINE_MINUTES + WATCHED_MINUTES + 2) as usize;
        assert_eq!(starts.len(), minutes, "{answer}");
        // The two minutes before the first span: the graph had nothing, so no data.
        assert_eq!(answer["calls"][0], Value::Null, "{answer}");
        assert_eq!(answer["calls"][1], Value::Null, "{answer}");
        let rows = rows(&server, &sql);
        assert_eq!(rows.len(), minutes - 2, "{sql}");
        for row in rows {
            let at = starts
                .iter()
                .position(|s| Some(*s) == row[0].as_u64())
                .unwrap_or_else(|| panic!("{element}: no step at {}: {answer}", row[0]));
            let got: Vec<&Value> = ["calls", "errors", "p50_ms", "p99_ms"]
                .iter()
                .map(|column| &answer[column][at])
                .collect();
            let want: Vec<&Value> = row[1..].iter().collect();
            assert_eq!(got, want, "{element} at {}: {answer}", row[0]);
        }
    }
    // The burst as the panel draws it: 6 of 10 calls failing in each watched minute.
    let (_, payments) = series(
        &server,
        &format!("node=payments&from={from_ms}&to={to_ms}&step=1m"),
    );
    let burst = 2 + BASELINE_MINUTES as usize;
    assert_eq!(payments["error_rate"][burst], 0.6, "{payments}");
    // No window given: the last 15 minutes in 10 s steps (the graph's buckets).
    let (status, recent) = series(&server, "source=orders&target=payments");
    assert_eq!(
        (status, &recent["step_s"]),
        (200, &Value::from(10.0)),
        "{recent}"
    );
    let points = recent["start_ms"].as_array().unwrap().len();
    assert!((89..=90).contains(&points), "{recent}");

    for (query, says) in [
        (
            "",
            "say which element: `node=<id>`, or `source=<id>&target=<id>`",
        ),
        ("node=a&source=b&target=c", "say which element"),
        ("source=a", "say which element"),
        (
            "source=a&target=b&kind=both",
            "`kind` must be `sync` or `async`",
        ),
        ("node=a&kind=sync", "`kind` is for edges"),
        (
            "node=a&step=15s",
            "whole multiple of the graph's 10s buckets (--graph-bucket)",
        ),
        (
            "node=a&step=soon",
            "`step` must be a duration such as `10s` or `1m`",
        ),
        (
            "node=a&from=24h&step=10s",
            "more than the 360 a series may have; send a `step` of at least 4m",
        ),
        ("node=a&from=now&to=1h", "the window is empty"),
        ("node=a&from=yesterday", "is not RFC 3339"),
    ] {
        let (status, body) = series(&server, query);
        assert_eq!(status, 400, "{query}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(says), "{query}: {error}");
    }
}

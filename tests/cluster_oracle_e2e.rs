//! The oracle (issue 24): the same spans sent to a standalone flowscope and to a cluster
//! (two ingesters, two receivers, one of them an ingester too that takes its own partitions'
//! parts in process; the spans of each trace split between the receivers) give
//! the same answers to a fixed set of SQL queries (counts, README's five queries, a trace, a
//! self-join), before and across a flush, read by the cluster's querier.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Server;
use common::cluster::{export_with_retry, start, wait_for_split};
use common::otlp::{base_time_ns, string_attribute};
use common::postgres::Postgres;
use common::s3::{Kind, S3};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use serde_json::Value;

/// A small, deterministic system: frontend → orders → inventory, orders → payments; every
/// 13th trace fails in payments, durations vary by trace.
fn trace_spans(trace: u64) -> Vec<(&'static str, Span)> {
    let base = base_time_ns() - 30 * 60 * 1_000_000_000 + trace * 3_000_000_000;
    let mut trace_id = vec![0x5au8; 16];
    trace_id[8..].copy_from_slice(&(trace + 1).to_be_bytes());
    let jitter = (trace * 7_919) % 97;
    let span =
        |n: u64, parent: Option<u64>, name: &str, kind: i32, start: u64, ms: u64, error: bool| {
            let mut span_id = vec![0u8; 8];
            span_id[..6].copy_from_slice(&(trace + 1).to_be_bytes()[2..]);
            span_id[7] = n as u8;
            let parent_span_id = parent
                .map(|p| {
                    let mut id = span_id.clone();
                    id[7] = p as u8;
                    id
                })
                .unwrap_or_default();
            Span {
                trace_id: trace_id.clone(),
                span_id,
                parent_span_id,
                name: name.into(),
                kind,
                start_time_unix_nano: base + start * 1_000_000,
                end_time_unix_nano: base + (start + ms) * 1_000_000,
                attributes: vec![string_attribute("http.route", name)],
                status: Some(Status {
                    code: if error { 2 } else { 0 },
                    message: if error {
                        "declined".into()
                    } else {
                        String::new()
                    },
                }),
                ..Span::default()
            }
        };
    let failed = trace.is_multiple_of(13);
    // Kinds: 2 SERVER, 3 CLIENT.
    vec![
        (
            "frontend",
            span(1, None, "GET /checkout", 2, 0, 40 + jitter, failed),
        ),
        (
            "frontend",
            span(2, Some(1), "POST /orders", 3, 2, 30 + jitter, failed),
        ),
        (
            "orders",
            span(3, Some(2), "POST /orders", 2, 3, 28 + jitter, failed),
        ),
        (
            "orders",
            span(4, Some(3), "GET /stock", 3, 4, 5 + jitter % 7, false),
        ),
        (
            "inventory",
            span(5, Some(4), "GET /stock", 2, 5, 3 + jitter % 7, false),
        ),
        (
            "orders",
            span(6, Some(3), "POST /pay", 3, 12, 10 + jitter % 11, failed),
        ),
        (
            "payments",
            span(7, Some(6), "POST /pay", 2, 13, 8 + jitter % 11, failed),
        ),
    ]
}

/// One request per service of `spans`.
fn request(spans: Vec<(&'static str, Span)>) -> ExportTraceServiceRequest {
    let mut by_service: Vec<(&str, Vec<Span>)> = Vec::new();
    for (service, span) in spans {
        match by_service.iter_mut().find(|(s, _)| *s == service) {
            Some((_, list)) => list.push(span),
            None => by_service.push((service, vec![span])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .flat_map(|(service, spans)| common::otlp::request(service, spans).resource_spans)
            .collect(),
    }
}

/// Traces `from..to` as requests of 20 traces: to the one server, or split between two
/// (each trace's spans alternately to one and the other).
fn batches(
    from: u64,
    to: u64,
) -> Vec<(
    ExportTraceServiceRequest,
    ExportTraceServiceRequest,
    ExportTraceServiceRequest,
)> {
    (from..to)
        .step_by(20)
        .map(|first| {
            let (mut whole, mut left, mut right) = (Vec::new(), Vec::new(), Vec::new());
            for trace in first..(first + 20).min(to) {
                for (i, span) in trace_spans(trace).into_iter().enumerate() {
                    whole.push(span.clone());
                    if i % 2 == 0 {
                        left.push(span);
                    } else {
                        right.push(span);
                    }
                }
            }
            (request(whole), request(left), request(right))
        })
        .collect()
}

fn send_both(one: &Server, receivers: [&Server; 2], from: u64, to: u64) {
    let (mut whole, mut left, mut right) = (Vec::new(), Vec::new(), Vec::new());
    for (w, l, r) in batches(from, to) {
        whole.push(w);
        left.push(l);
        right.push(r);
    }
    one.export(whole);
    export_with_retry(receivers[0], left);
    export_with_retry(receivers[1], right);
}

const QUERIES: [&str; 14] = [
    "SELECT count(*) FROM spans",
    "SELECT service_name, count(*) AS spans, sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors \
     FROM spans WHERE start_time > now() - INTERVAL '1 hour' GROUP BY service_name ORDER BY spans DESC, service_name",
    "SELECT service_name, name, approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) / 1e6 AS p99_ms \
     FROM spans WHERE kind = 'SERVER' AND start_time > now() - INTERVAL '1 hour' \
     GROUP BY service_name, name ORDER BY p99_ms DESC, service_name, name LIMIT 10",
    "SELECT date_bin(INTERVAL '1 minute', start_time) AS minute, count(*) AS calls, \
     avg(CASE WHEN status_code = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate \
     FROM spans WHERE service_name = 'orders' AND start_time > now() - INTERVAL '1 hour' \
     GROUP BY minute ORDER BY minute",
    "SELECT parent.service_name AS caller, child.service_name AS callee, count(*) AS calls, \
     max(child.duration_ns) AS slowest FROM spans child JOIN spans parent \
     ON child.trace_id = parent.trace_id AND child.parent_span_id = parent.span_id \
     WHERE child.service_name <> parent.service_name GROUP BY caller, callee ORDER BY calls DESC, caller, callee",
    "SELECT service_name, name, kind, start_time, duration_ns / 1e6 AS ms, status_code, span_id, parent_span_id \
     FROM spans WHERE trace_id = '5a5a5a5a5a5a5a5a000000000000001b' ORDER BY start_time, span_id",
    "SELECT count(DISTINCT trace_id), min(start_time), max(end_time), sum(duration_ns) FROM spans",
    "SELECT attributes['http.route'] AS route, count(*) FROM spans WHERE status_code = 'ERROR' GROUP BY 1 ORDER BY 1",
    "SELECT trace_id, count(*) FROM spans GROUP BY trace_id HAVING count(*) <> 7",
    // The graph, merged on the querier from both ingesters' buckets.
    "SELECT source, target, kind, calls, errors, round(p50_ms, 1), round(p99_ms, 1) \
     FROM edges_between(now() - INTERVAL '45 minutes', now()) ORDER BY source, target",
    "SELECT id, kind, calls, errors, round(p99_ms, 1), health FROM nodes_between(now() - INTERVAL '45 minutes', now()) ORDER BY id",
    "SELECT source, target, sum(calls), sum(errors) FROM edge_series('1m', now() - INTERVAL '45 minutes', now()) \
     GROUP BY source, target ORDER BY source, target",
    "SELECT source, target, metric, rule, count(*) FROM edge_anomalies('1m', '10m', 3, now() - INTERVAL '45 minutes', now()) \
     GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    "SELECT kind, count(*) FROM topology_events(now() - INTERVAL '45 minutes', now(), '5m') GROUP BY kind ORDER BY kind",
];

/// The answers' rows, floats rounded to 6 significant digits (sums of floats may add in
/// another order).
fn rows(server: &Server, sql: &str) -> Value {
    let mut answer = server.sql(sql)["rows"].clone();
    fn round(value: &mut Value) {
        match value {
            Value::Array(items) => items.iter_mut().for_each(round),
            Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap();
                *value = Value::String(format!("{f:.6e}"));
            }
            _ => {}
        }
    }
    round(&mut answer);
    answer
}

fn same_answers(one: &Server, querier: &Server, when: &str) {
    for sql in QUERIES {
        let (expected, got) = (rows(one, sql), rows(querier, sql));
        assert!(
            expected.as_array().is_some_and(|r| !r.is_empty()
                || sql.contains("HAVING")
                || sql.contains("anomalies")
                || sql.contains("topology_events")),
            "{sql}: the oracle answered nothing"
        );
        assert_eq!(got, expected, "{when}: {sql}");
    }
    same_graph(one, querier, when);
}

/// `GET /api/graph` of the last 45 minutes: the same nodes, edges and loops, calls and
/// errors exact, latency quantiles within the sketch's relative error (they are merged from
/// two ingesters' sketches), health the same.
fn same_graph(one: &Server, querier: &Server, when: &str) {
    let graph = |server: &Server| server.get_json("/api/graph?from=45m&to=now");
    let (expected, got) = (graph(one), graph(querier));
    let listed = |graph: &Value, key: &str, id: &dyn Fn(&Value) -> String| {
        let mut items: Vec<(String, Value)> = graph[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| (id(item), item.clone()))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        items
    };
    let edge_id = |e: &Value| format!("{} -> {} {}", e["source"], e["target"], e["kind"]);
    let node_id = |n: &Value| format!("{} {}", n["id"], n["kind"]);
    for (key, id) in [
        ("edges", &edge_id as &dyn Fn(&Value) -> String),
        ("nodes", &node_id),
    ] {
        let (expected, got) = (listed(&expected, key, id), listed(&got, key, id));
        assert!(
            !expected.is_empty(),
            "{when}: the oracle's graph has no {key}"
        );
        assert_eq!(
            got.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            expected.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            "{when}: the {key} of the graph"
        );
        for ((id, got), (_, expected)) in got.iter().zip(&expected) {
            let fields = got.as_object().unwrap();
            for (field, value) in fields {
                let want = &expected[field];
                match (value.as_f64(), want.as_f64()) {
                    (Some(a), Some(b)) if field.ends_with("_ms") => assert!(
                        (a - b).abs() <= 0.02 * b.abs().max(1.0),
                        "{when}: {key} {id} {field}: {a} against {b}"
                    ),
                    _ => assert_eq!(value, want, "{when}: {key} {id} {field}"),
                }
            }
        }
    }
    assert_eq!(got["loops"], expected["loops"], "{when}: the graph's loops");
}

#[test]
fn a_cluster_answers_sql_as_one_node_does() {
    let mut pg = Postgres::start();
    let metadata = pg.database("oracle");
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(Kind::S3sFs, dir.path());
    let one = Server::start(&dir.path().join("one"), &["--flush-interval", "2s"]);
    // `a` receives as well as ingests: the parts of its own partitions it takes in process,
    // the rest it forwards to `b`, as the receiver `r1` forwards to both.
    let a = start(&dir.path().join("a"), &s3, &metadata, "receiver,ingester");
    let b = start(&dir.path().join("b"), &s3, &metadata, "ingester");
    let r1 = start(&dir.path().join("r1"), &s3, &metadata, "receiver,querier");
    wait_for_split(&r1, &a, &b);

    send_both(&one, [&r1, &a], 0, 300);
    same_answers(&one, &r1, "from memory");
    // Both sides flush (every 2 s); the rest arrives after, into memory again.
    std::thread::sleep(Duration::from_secs(5));
    send_both(&one, [&r1, &a], 300, 500);
    same_answers(&one, &r1, "across a flush");
    assert_eq!(r1.count("SELECT count(*) FROM spans"), 3_500);
    // `a` took its own partitions' parts in process (and forwarded the rest to `b`).
    let metrics = a.metrics_text();
    let local: f64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("flowscope_ingest_spans_total{")
                && line.contains("protocol=\"local\"")
                && line.contains("outcome=\"accepted\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        local > 0.0,
        "node a (receiver and ingester) took no part in process:\n{metrics}"
    );

    for server in [r1, a, b, one] {
        server.stop();
    }
    pg.stop();
}

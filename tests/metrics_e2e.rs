//! `/metrics` read by a Prometheus text-format parser that is not ours (`prometheus-parse`):
//! ingest labelled by tenant, protocol and outcome, SQL figures with a duration histogram,
//! and `flowscope_build_info` (issue 21, item 5).

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;
use prometheus_parse::{Sample, Scrape, Value};
use prost::Message as _;

fn scrape(server: &Server) -> (String, Scrape) {
    let text = server.metrics_text();
    let parsed = Scrape::parse(text.lines().map(|line| Ok(line.to_string())))
        .expect("parses as text format");
    (text, parsed)
}

/// The sample of `metric` whose labels include every one of `labels`.
fn find<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    scrape.samples.iter().find(|sample| {
        sample.metric == metric
            && labels
                .iter()
                .all(|(name, value)| sample.labels.get(name) == Some(*value))
    })
}

fn counter(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(scrape, metric, labels).map(|sample| &sample.value) {
        Some(Value::Counter(value)) => *value,
        other => panic!("{metric}{labels:?}: no counter ({other:?})"),
    }
}

#[test]
fn metrics_carry_ingest_by_tenant_protocol_and_outcome_sql_figures_and_build_info() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);

    // Five spans over OTLP/gRPC, three over OTLP/HTTP (protobuf), and one HTTP request that
    // is not OTLP at all.
    server.export(vec![common::otlp::numbered_request("checkout", 1, 5)]);
    let client = reqwest::blocking::Client::new();
    let body = common::otlp::numbered_request("payments", 100, 3).encode_to_vec();
    let answer = client
        .post(server.traces_url())
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .expect("POST /v1/traces");
    assert_eq!(answer.status(), 200);
    let answer = client
        .post(server.traces_url())
        .header("content-type", "application/x-protobuf")
        .body(b"\xff\xff\xff not protobuf".to_vec())
        .send()
        .expect("POST /v1/traces");
    assert_eq!(answer.status(), 400);
    // One query that answers, one that does not parse.
    assert_eq!(server.count("SELECT count(*) FROM spans"), 8);
    let (status, _) = server.sql_status("SELEKT 1");
    assert_eq!(status, 400);

    let (text, scrape) = scrape(&server);
    let ingest = |metric: &str, protocol: &str, outcome: &str| {
        counter(
            &scrape,
            metric,
            &[
                ("tenant", "default"),
                ("protocol", protocol),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(
        ingest("flowscope_ingest_requests_total", "grpc", "accepted"),
        1.0
    );
    assert_eq!(
        ingest("flowscope_ingest_requests_total", "http", "accepted"),
        1.0
    );
    assert_eq!(
        ingest("flowscope_ingest_requests_total", "http", "invalid"),
        1.0
    );
    assert_eq!(
        ingest("flowscope_ingest_spans_total", "grpc", "accepted"),
        5.0
    );
    assert_eq!(
        ingest("flowscope_ingest_spans_total", "http", "accepted"),
        3.0
    );

    let sql = |outcome| {
        counter(
            &scrape,
            "flowscope_sql_queries_total",
            &[("tenant", "default"), ("outcome", outcome)],
        )
    };
    assert_eq!(sql("ok"), 1.0);
    assert_eq!(sql("invalid"), 1.0);
    assert_eq!(
        counter(
            &scrape,
            "flowscope_sql_query_errors_total",
            &[("tenant", "default")]
        ),
        1.0
    );
    match find(
        &scrape,
        "flowscope_sql_query_duration_seconds",
        &[("tenant", "default")],
    )
    .map(|sample| &sample.value)
    {
        Some(Value::Histogram(buckets)) => {
            let all = buckets
                .iter()
                .find(|bucket| bucket.less_than == f64::INFINITY)
                .expect("a +Inf bucket");
            assert_eq!(all.count, 2.0, "{text}");
            assert!(
                buckets
                    .windows(2)
                    .all(|pair| pair[0].count <= pair[1].count),
                "buckets are cumulative: {buckets:?}"
            );
        }
        other => panic!("no SQL duration histogram: {other:?}\n{text}"),
    }

    let build = find(&scrape, "flowscope_build_info", &[]).expect("flowscope_build_info");
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(
        build
            .labels
            .get("rustc")
            .is_some_and(|v| v.starts_with("1.")),
        "{text}"
    );

    // Prometheus's naming rules: every family has HELP and TYPE, counters end in `_total`,
    // durations are in seconds; the existing unlabelled series are still there.
    for family in [
        "flowscope_ingest_requests_total",
        "flowscope_ingest_spans_total",
        "flowscope_sql_queries_total",
        "flowscope_sql_query_duration_seconds",
        "flowscope_alert_evaluations_total",
        "flowscope_alert_evaluation_duration_seconds",
        "flowscope_webhook_delivery_attempts_total",
        "flowscope_webhook_delivery_duration_seconds",
        "flowscope_build_info",
    ] {
        assert!(scrape.docs.contains_key(family), "no HELP for {family}");
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no TYPE for {family}"
        );
    }
    for line in text.lines().filter(|line| line.starts_with("# TYPE ")) {
        let mut words = line.split_whitespace().skip(2);
        let (name, kind) = (words.next().expect("a name"), words.next().expect("a type"));
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{line}");
        }
    }
    assert!(
        text.contains("\nflowscope_store_spans_written_total 8\n"),
        "{text}"
    );
    server.stop();
}

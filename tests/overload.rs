//! Overload without loss: clients sending far beyond what a server with a low
//! `--memory-limit` can take (many connections, large requests, over gRPC and HTTP) get only
//! retryable refusals, the server's peak RSS stays under the limit, and once the clients
//! have retried, every acknowledged span is stored exactly once.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use common::ingest::{Outcome, grpc_export, http_export, span_id_hex};
use common::otlp::numbered_request;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tonic::transport::Channel;

const MEMORY_LIMIT_MIB: u64 = 256;
const GRPC_CONNECTIONS: u64 = 4;
const GRPC_TASKS_PER_CONNECTION: u64 = 8;
const HTTP_TASKS: u64 = 16;
const REQUESTS_PER_TASK: u64 = 2;
/// About 1.2 MB of protobuf per request.
const SPANS_PER_REQUEST: u64 = 3000;

/// What the clients saw, by kind of outcome.
#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, u64>,
    wrong: Vec<String>,
    acked_spans: u64,
}

impl Tally {
    fn count(&mut self, key: String) {
        *self.outcomes.entry(key).or_default() += 1;
    }
}

/// Sends one request until it is acknowledged, retrying as an OTLP exporter does (sooner
/// than the advertised delay, to keep the pressure on).
async fn send_until_acked<F, Fut>(first: u64, tally: &Mutex<Tally>, protocol: &str, mut send: F)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let started = Instant::now();
    loop {
        let outcome = send(first).await;
        {
            let mut tally = tally.lock().expect("tally");
            match outcome {
                Outcome::Acked => {
                    tally.count(format!("{protocol} acked"));
                    tally.acked_spans += SPANS_PER_REQUEST;
                    return;
                }
                Outcome::Retryable { what, .. } => {
                    // Tallied by cause, without the figures the message carries.
                    let cause = if what.contains("memory limit") {
                        "UNAVAILABLE (request budget)".to_string()
                    } else if what.contains("pipeline is full") {
                        "UNAVAILABLE (ingest buffer)".to_string()
                    } else {
                        what
                    };
                    tally.count(format!("{protocol} {cause}"));
                }
                Outcome::Disconnected(error) => {
                    tally.count(format!("{protocol} disconnected"));
                    if protocol == "grpc" {
                        tally.wrong.push(format!("grpc connection broke: {error}"));
                    }
                }
                Outcome::Wrong(what) => {
                    tally.wrong.push(format!("{protocol}: {what}"));
                    return;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "a request was refused for two minutes"
        );
        tokio::time::sleep(Duration::from_millis(50 + first % 150)).await;
    }
}

#[test]
fn far_beyond_capacity_refusals_are_retryable_memory_stays_under_the_limit_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limit = format!("{MEMORY_LIMIT_MIB}MiB");
    let server = Server::start(
        dir.path(),
        &[
            "--memory-limit",
            &limit,
            "--sql-max-rows",
            "10",
            "--wal-sync",
            "never",
        ],
    );
    let idle_rss_kib = server.memory_kib("VmRSS");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        let mut first = 0u64;
        for _ in 0..GRPC_CONNECTIONS {
            // One HTTP/2 connection each; its tasks multiplex streams over it.
            let channel = Channel::from_shared(server.grpc_url())
                .expect("uri")
                .connect()
                .await
                .expect("connect");
            for _ in 0..GRPC_TASKS_PER_CONNECTION {
                let client =
                    TraceServiceClient::new(channel.clone()).max_encoding_message_size(64 << 20);
                let (tally, start) = (tally.clone(), first);
                first += REQUESTS_PER_TASK * SPANS_PER_REQUEST;
                tasks.push(tokio::spawn(async move {
                    for r in 0..REQUESTS_PER_TASK {
                        let at = start + r * SPANS_PER_REQUEST;
                        send_until_acked(at, &tally, "grpc", |at| {
                            let mut client = client.clone();
                            async move {
                                let request = numbered_request("overload", at, SPANS_PER_REQUEST);
                                grpc_export(&mut client, request).await
                            }
                        })
                        .await;
                    }
                }));
            }
        }
        let http = reqwest::Client::new();
        for _ in 0..HTTP_TASKS {
            let (tally, start, http, url) =
                (tally.clone(), first, http.clone(), server.traces_url());
            first += REQUESTS_PER_TASK * SPANS_PER_REQUEST;
            tasks.push(tokio::spawn(async move {
                for r in 0..REQUESTS_PER_TASK {
                    let at = start + r * SPANS_PER_REQUEST;
                    send_until_acked(at, &tally, "http", |at| {
                        let (http, url) = (http.clone(), url.clone());
                        async move {
                            let request = numbered_request("overload", at, SPANS_PER_REQUEST);
                            http_export(&http, &url, &request).await
                        }
                    })
                    .await;
                }
            }));
        }
        for task in tasks {
            task.await.expect("client task");
        }
    });
    let sending = started.elapsed();
    let total = (GRPC_CONNECTIONS * GRPC_TASKS_PER_CONNECTION + HTTP_TASKS)
        * REQUESTS_PER_TASK
        * SPANS_PER_REQUEST;
    let tally = Arc::try_unwrap(tally)
        .ok()
        .expect("tasks done")
        .into_inner()
        .expect("tally");
    let peak_rss_kib = server.memory_kib("VmHWM");
    let status: serde_json::Value =
        reqwest::blocking::get(format!("http://{}/api/status", server.api))
            .expect("status")
            .json()
            .expect("json");

    eprintln!(
        "overload: {total} spans from {} clients in {sending:?}; outcomes {:?}; peak RSS {} MiB \
         (idle {} MiB) under a {MEMORY_LIMIT_MIB} MiB limit; server figures {}",
        GRPC_CONNECTIONS * GRPC_TASKS_PER_CONNECTION + HTTP_TASKS,
        tally.outcomes,
        peak_rss_kib / 1024,
        idle_rss_kib / 1024,
        status
    );
    assert!(
        tally.wrong.is_empty(),
        "answers a client must not get under overload: {:?}",
        &tally.wrong[..tally.wrong.len().min(10)]
    );
    let refusals: u64 = tally
        .outcomes
        .iter()
        .filter(|(k, _)| !k.ends_with("acked"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        refusals > 0,
        "nothing was refused: the test did not overload the server ({:?})",
        tally.outcomes
    );
    assert!(
        peak_rss_kib < MEMORY_LIMIT_MIB * 1024,
        "peak RSS {} MiB is over the {MEMORY_LIMIT_MIB} MiB limit",
        peak_rss_kib / 1024
    );

    assert_eq!(
        tally.acked_spans, total,
        "every request was acknowledged in the end"
    );
    // Counted by span id: each of the acknowledged ids once, no other.
    let answer = server.sql(
        "SELECT count(*), count(DISTINCT span_id), min(span_id), max(span_id) FROM spans WHERE service_name = 'overload'",
    );
    let row = &answer["rows"][0];
    assert_eq!(row[0].as_i64(), Some(total as i64), "spans stored: {row}");
    assert_eq!(
        row[1].as_i64(),
        Some(total as i64),
        "distinct span ids: {row}"
    );
    assert_eq!(row[2].as_str(), Some(span_id_hex(0).as_str()));
    assert_eq!(row[3].as_str(), Some(span_id_hex(total - 1).as_str()));
    let twice = server.sql(
        "SELECT span_id FROM spans WHERE service_name = 'overload' GROUP BY span_id HAVING count(*) > 1 LIMIT 5",
    );
    assert_eq!(twice["rows"], serde_json::json!([]), "spans stored twice");
}

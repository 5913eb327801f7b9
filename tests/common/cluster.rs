//! A flowscope cluster on loopback for the tests (issue 24): nodes started with `--roles`
//! over one PostgreSQL and one s3s-fs, and what tests ask of them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;

use super::Server;
use super::otlp::numbered_request;
use super::s3::{BUCKET, S3};

/// Starts a node with `roles` on `data`, over the cluster's `metadata` and bucket, flushing
/// every 2 s.
pub fn start(data: &Path, s3: &S3, metadata: &str, roles: &str) -> Server {
    start_with_env(data, s3, metadata, roles, &[])
}

/// Like [`start`] with `env` added to the node's environment (a test hook).
pub fn start_with_env(
    data: &Path,
    s3: &S3,
    metadata: &str,
    roles: &str,
    env: &[(&str, &str)],
) -> Server {
    let s3_env: Vec<(&str, String)> = s3.env();
    let mut all: Vec<(&str, &str)> = s3_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(env);
    let object_store = format!("s3://{BUCKET}/cluster");
    Server::start_with_env(
        data,
        &all,
        &[
            "--metadata",
            metadata,
            "--roles",
            roles,
            "--object-store",
            &object_store,
            "--flush-interval",
            flush_interval(env),
        ],
    )
}

/// The flush interval of a test node: 2 s, or `FLOWSCOPE_TEST_FLUSH_INTERVAL` in `env`
/// (a node that must keep its spans in memory for the whole test).
fn flush_interval<'a>(env: &[(&str, &'a str)]) -> &'a str {
    env.iter()
        .find(|(key, _)| *key == "FLOWSCOPE_TEST_FLUSH_INTERVAL")
        .map_or("2s", |(_, value)| *value)
}

pub fn cluster(server: &Server) -> Value {
    reqwest::blocking::get(format!("http://{}/api/cluster", server.api))
        .expect("GET /api/cluster")
        .json()
        .expect("JSON")
}

/// Partitions held, by node id, as `/api/cluster` says.
pub fn held(server: &Server) -> BTreeMap<String, u64> {
    cluster(server)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["state"] == "up")
        .map(|node| {
            (
                node["node"].as_str().unwrap().to_string(),
                node["partitions"].as_u64().unwrap(),
            )
        })
        .collect()
}

pub fn node_id(server: &Server) -> String {
    std::fs::read_to_string(server.data_dir.join("node-id"))
        .unwrap()
        .trim()
        .to_string()
}

pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The trace ids an ingester holds, with their span counts.
pub fn traces(server: &Server) -> BTreeMap<String, i64> {
    let answer = server.sql("SELECT trace_id, count(*) FROM spans GROUP BY trace_id");
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row[0].as_str().unwrap().to_string(),
                row[1].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Sends `requests` to `receiver` over OTLP/gRPC one by one, each retried on UNAVAILABLE (as
/// exporters do) for up to 60 s; each must be accepted whole.
pub fn export_with_retry(receiver: &Server, requests: Vec<ExportTraceServiceRequest>) {
    export_to(&receiver.grpc_url(), requests);
}

/// [`export_with_retry`] to the OTLP/gRPC endpoint `url`.
pub fn export_to(url: &str, requests: Vec<ExportTraceServiceRequest>) {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(url.to_string()).await.unwrap();
        for request in requests {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match client.export(request.clone()).await {
                    Ok(answer) => {
                        let answer = answer.into_inner();
                        assert!(answer.partial_success.is_none(), "{answer:?}");
                        break;
                    }
                    Err(status) if status.code() == tonic::Code::Unavailable => {
                        assert!(Instant::now() < deadline, "still unavailable: {status:?}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(status) => panic!("export refused: {status:?}"),
                }
            }
        }
    });
}

/// Sends `request` as an exporter behind a list of receivers does: to the first of `urls`
/// that answers, going on to the next when one cannot be reached or answers UNAVAILABLE,
/// until it is accepted (60 s at most).
pub fn export_to_any(urls: &[String], request: ExportTraceServiceRequest) {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        for url in urls.iter().cycle() {
            assert!(Instant::now() < deadline, "no receiver took the request");
            let Ok(mut client) = TraceServiceClient::connect(url.clone()).await else {
                continue;
            };
            match client.export(request.clone()).await {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    assert!(answer.partial_success.is_none(), "{answer:?}");
                    return;
                }
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
                    ) =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(status) => panic!("export refused: {status:?}"),
            }
        }
    });
}

/// `count` spans numbered from `first` under a service, sent to the receiver in requests
/// of 200 (see [`export_with_retry`]).
pub fn send(receiver: &Server, service: &str, first: u64, count: u64) {
    let requests = (first..first + count)
        .step_by(200)
        .map(|at| numbered_request(service, at, 200.min(first + count - at)))
        .collect();
    export_with_retry(receiver, requests);
}

pub fn post(receiver: &Server, content_type: &str, body: Vec<u8>) {
    let response = reqwest::blocking::Client::new()
        .post(receiver.traces_url())
        .header("content-type", content_type)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
}

/// Waits (up to 30 s) until `querier`'s `/api/cluster` shows `a` and `b` holding 32
/// partitions each.
pub fn wait_for_split(querier: &Server, a: &Server, b: &Server) {
    let (a_id, b_id) = (node_id(a), node_id(b));
    wait_for(
        "the ingesters to split the partitions",
        Duration::from_secs(30),
        || {
            let held = held(querier);
            held.get(&a_id) == Some(&32) && held.get(&b_id) == Some(&32)
        },
    );
}

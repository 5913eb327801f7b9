//! Every bad input gets its documented status, and the server keeps serving afterwards.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::Server;
use common::otlp::{numbered_request, request, span};
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

/// `google.rpc.Status`, the body OTLP/HTTP errors carry (declared here, not taken from
/// the server's code, so the test checks the wire format).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn post(
    server: &Server,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::blocking::Response {
    let mut request = reqwest::blocking::Client::new()
        .post(server.traces_url())
        .header("content-type", content_type)
        .body(body);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    request.send().expect("POST /v1/traces")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// A gzip stream of `total` zero bytes, compressed a chunk at a time (never held inflated).
fn gzip_bomb(total: usize) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..total / chunk.len() {
        encoder.write_all(&chunk).expect("gzip");
    }
    encoder.finish().expect("gzip")
}

fn assert_still_serving(server: &Server, service: &str) {
    let body = numbered_request(service, 900_000, 3).encode_to_vec();
    let response = post(server, "application/x-protobuf", None, body);
    assert_eq!(
        response.status().as_u16(),
        200,
        "the server still accepts spans"
    );
    let sql = format!("SELECT count(*) FROM spans WHERE service_name = '{service}'");
    assert_eq!(server.count(&sql), 3);
}

#[test]
fn http_bad_inputs_get_their_documented_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--max-request-size", "1MiB"]);

    // Partial success: three invalid spans of ten are rejected, seven stored.
    let mut spans: Vec<_> = (0..10).map(|n| span(n, n)).collect();
    spans[1].trace_id = vec![0; 16];
    spans[2].span_id = vec![1; 7];
    spans[3].end_time_unix_nano = spans[3].start_time_unix_nano - 1;
    let response = post(
        &server,
        "application/x-protobuf",
        None,
        request("partial", spans).encode_to_vec(),
    );
    assert_eq!(response.status().as_u16(), 200);
    let answer = ExportTraceServiceResponse::decode(response.bytes().expect("body"))
        .expect("protobuf answer");
    let partial = answer.partial_success.expect("partial_success set");
    assert_eq!(partial.rejected_spans, 3);
    assert!(!partial.error_message.is_empty());
    assert_eq!(
        server.count("SELECT count(*) FROM spans WHERE service_name = 'partial'"),
        7
    );

    // Empty request: success, partial_success unset.
    let response = post(
        &server,
        "application/x-protobuf",
        None,
        request("empty", vec![]).encode_to_vec(),
    );
    assert_eq!(response.status().as_u16(), 200);
    let answer =
        ExportTraceServiceResponse::decode(response.bytes().expect("body")).expect("answer");
    assert!(answer.partial_success.is_none());

    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        u16,
    );
    let cases: Vec<Case> = vec![
        ("garbage protobuf", "application/x-protobuf", None, b"\xff\xff\xff\xff not protobuf".to_vec(), 400),
        ("garbage json", "application/json", None, b"{\"resourceSpans\": [".to_vec(), 400),
        ("enum name in json", "application/json", None, br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","kind":"SPAN_KIND_SERVER"}]}]}]}"#.to_vec(), 400),
        ("text/plain", "text/plain", None, b"hello".to_vec(), 415),
        ("unknown encoding", "application/x-protobuf", Some("br"), b"x".to_vec(), 415),
        // Just over the limit: the server answers 413 after reading the first MiB and closes;
        // a remainder larger than the socket buffers would make the client's write fail
        // (EPIPE) before it reads the answer.
        ("over the limit raw", "application/x-protobuf", None, vec![0u8; (1 << 20) + (64 << 10)], 413),
        ("over the limit after gzip", "application/x-protobuf", Some("gzip"), gzip(&vec![0u8; 4 << 20]), 413),
        ("truncated gzip", "application/x-protobuf", Some("gzip"), gzip(b"abc")[..8].to_vec(), 400),
    ];
    for (what, content_type, encoding, body, status) in cases {
        let response = post(&server, content_type, encoding, body);
        assert_eq!(response.status().as_u16(), status, "{what}");
        if status != 415 && content_type == "application/x-protobuf" {
            let body = response.bytes().expect("body");
            let rpc = RpcStatus::decode(body)
                .unwrap_or_else(|e| panic!("{what}: error body is not a google.rpc.Status: {e}"));
            assert!(
                !rpc.message.is_empty(),
                "{what}: the Status names the problem"
            );
        }
    }
    let get = reqwest::blocking::get(server.traces_url()).expect("GET");
    assert_eq!(get.status().as_u16(), 405);

    assert_still_serving(&server, "after-http-errors");
}

#[test]
fn a_300_mib_gzip_bomb_is_refused_without_inflating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let bomb = gzip_bomb(300 << 20);
    assert!(
        bomb.len() < 1 << 20,
        "the bomb is small on the wire: {} bytes",
        bomb.len()
    );
    let before = server.memory_kib("VmRSS");
    let response = post(&server, "application/x-protobuf", Some("gzip"), bomb);
    assert_eq!(response.status().as_u16(), 413);
    let peak = server.memory_kib("VmHWM");
    // The limit is 64 MiB after decompression; inflating the bomb would need 300 MiB.
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 160,
        "peak RSS grew by {grown_mib} MiB while refusing the bomb"
    );
    assert_still_serving(&server, "after-bomb");
}

#[test]
fn grpc_over_the_limit_is_resource_exhausted_not_retryable_out_of_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--max-request-size", "1MiB"]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(server.grpc_url())
            .await
            .expect("connect")
            .max_encoding_message_size(usize::MAX);
        let big = numbered_request("big", 0, 4000);
        assert!(big.encoded_len() > 1 << 20);
        let status = client.export(big).await.expect_err("over the limit");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

        let mut gzip_client = TraceServiceClient::connect(server.grpc_url())
            .await
            .expect("connect")
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        let answer = gzip_client
            .export(numbered_request("gzip", 0, 100))
            .await
            .expect("gzip request");
        assert!(answer.into_inner().partial_success.is_none());
    });
    assert_eq!(
        server.count("SELECT count(*) FROM spans WHERE service_name = 'gzip'"),
        100
    );
    assert_still_serving(&server, "after-grpc-errors");
}

#[test]
fn a_full_store_refuses_with_retryable_codes_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A 1 KiB ingest buffer cannot hold any real batch: every write finds the store full.
    let server = Server::start(dir.path(), &["--ingest-buffer", "1KiB"]);
    let body = numbered_request("overloaded", 0, 50).encode_to_vec();
    let response = post(&server, "application/x-protobuf", None, body);
    assert_eq!(response.status().as_u16(), 503, "HTTP: retryable 503");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(server.grpc_url())
            .await
            .expect("connect");
        let status = client
            .export(numbered_request("overloaded", 100, 50))
            .await
            .expect_err("full");
        assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "gRPC: retryable UNAVAILABLE: {status:?}"
        );
        assert!(
            !status.details().is_empty(),
            "UNAVAILABLE carries RetryInfo"
        );
    });
    assert_eq!(
        server.count("SELECT count(*) FROM spans"),
        0,
        "a refused span is not stored"
    );
}

#[test]
fn spans_older_than_retention_are_refused_on_every_protocol_and_stay_gone_after_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    // One span that started at the epoch, one now; the default retention is 7 days.
    let mixed = |service: &str| {
        let mut ancient = span(1, 1);
        ancient.start_time_unix_nano = 0;
        ancient.end_time_unix_nano = 1_000;
        request(service, vec![ancient, span(2, 1)])
    };
    let expected = "rejected 1 of 2 spans: 1 started before the retention horizon (1w) and \
                    would be deleted at once";

    let response = post(
        &server,
        "application/x-protobuf",
        None,
        mixed("over-protobuf").encode_to_vec(),
    );
    assert_eq!(response.status().as_u16(), 200);
    let partial = ExportTraceServiceResponse::decode(response.bytes().expect("body"))
        .expect("protobuf answer")
        .partial_success
        .expect("partial_success set");
    assert_eq!(
        (partial.rejected_spans, partial.error_message.as_str()),
        (1, expected)
    );

    let response = post(
        &server,
        "application/json",
        None,
        serde_json::to_vec(&mixed("over-json")).expect("json"),
    );
    assert_eq!(response.status().as_u16(), 200);
    let answer: serde_json::Value = response.json().expect("json answer");
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "1", "{answer}");
    assert_eq!(
        answer["partialSuccess"]["errorMessage"], expected,
        "{answer}"
    );

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let partial = runtime.block_on(async {
        TraceServiceClient::connect(server.grpc_url())
            .await
            .expect("the OTLP/gRPC port answers")
            .export(mixed("over-grpc"))
            .await
            .expect("the export is answered")
            .into_inner()
            .partial_success
            .expect("partial_success set")
    });
    assert_eq!(
        (partial.rejected_spans, partial.error_message.as_str()),
        (1, expected)
    );

    let counts = |server: &Server| {
        server.sql(
            "SELECT service_name, count(*), min(start_time) > TIMESTAMP '2000-01-01' \
             FROM spans GROUP BY service_name ORDER BY service_name",
        )["rows"]
            .clone()
    };
    let only_current = serde_json::json!([
        ["over-grpc", 1, true],
        ["over-json", 1, true],
        ["over-protobuf", 1, true]
    ]);
    assert_eq!(counts(&server), only_current);
    // SIGKILL: the spans come back from the WAL, which logged the protobuf requests whole.
    server.kill();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(counts(&server), only_current, "after WAL replay");
}

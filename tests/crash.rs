//! Crash safety: spans acknowledged before a SIGKILL are all there after a restart on the
//! same data directory, none twice; Parquet written at shutdown is plain Parquet.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::Write;

use common::Server;
use common::otlp::{base_time_ns, numbered_request, request, span};
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

/// Sends 100-span requests until `requests` are acknowledged; returns the acknowledged
/// span ids (hex) in order.
fn send_acknowledged(server: &Server, first_request: u64, requests: u64) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(server.grpc_url())
            .await
            .expect("connect");
        let mut acked = Vec::new();
        for r in first_request..first_request + requests {
            let request = numbered_request("crash", r * 100, 100);
            let ids: Vec<String> = request.resource_spans[0].scope_spans[0]
                .spans
                .iter()
                .map(|s| hex(&s.span_id))
                .collect();
            client.export(request).await.expect("acknowledged");
            acked.extend(ids);
        }
        acked
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn stored_ids(server: &Server) -> Vec<String> {
    let rows = server.sql("SELECT span_id FROM spans WHERE service_name = 'crash'")["rows"].clone();
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| r[0].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn acknowledged_spans_survive_sigkill_and_replay_adds_no_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A small flush threshold so that some spans are in Parquet and some only in the WAL.
    let args = ["--flush-rows", "2500", "--sql-max-rows", "100000"];
    let server = Server::start(dir.path(), &args);
    let mut acked = send_acknowledged(&server, 0, 40);
    server.kill();

    let server = Server::start(dir.path(), &args);
    let stored = stored_ids(&server);
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(
        unique.len(),
        stored.len(),
        "no span stored twice after replay"
    );
    for id in &acked {
        assert!(unique.contains(id), "acknowledged span {id} lost");
    }
    assert_eq!(stored.len(), acked.len());

    // A second crash after more writes, then a clean stop: still exact.
    acked.extend(send_acknowledged(&server, 40, 17));
    server.kill();
    let server = Server::start(dir.path(), &args);
    assert_eq!(
        server.count("SELECT count(*) FROM spans"),
        acked.len() as i64
    );
    assert_eq!(
        server.count("SELECT count(DISTINCT span_id) FROM spans"),
        acked.len() as i64
    );
    server.stop();

    // After a clean stop everything is in Parquet: read it without our schema code.
    let mut files = Vec::new();
    collect_parquet(&common::segments_dir(dir.path()), &mut files);
    assert!(!files.is_empty());
    let mut rows = 0usize;
    for file in files {
        let file = std::fs::File::open(file).expect("open");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        rows += reader.map(|b| b.expect("batch").num_rows()).sum::<usize>();
    }
    assert_eq!(
        rows,
        acked.len(),
        "an independent Parquet reader sees every span once"
    );
    let wal_left: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
        .expect("wal dir")
        .collect();
    assert!(wal_left.len() <= 1, "flushed WAL segments are deleted");
}

fn collect_parquet(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect_parquet(&path, out);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
}

/// POSTs one OTLP/HTTP request; it must be answered 200. Returns the spans it rejected.
fn post(server: &Server, content_type: &str, gzip: bool, body: Vec<u8>) -> i64 {
    let body = if gzip {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(&body).expect("gzip");
        encoder.finish().expect("gzip")
    } else {
        body
    };
    let mut request = reqwest::blocking::Client::new()
        .post(server.traces_url())
        .header("content-type", content_type)
        .header("accept", "application/x-protobuf")
        .body(body);
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    let response = request.send().expect("POST /v1/traces");
    assert_eq!(response.status().as_u16(), 200);
    if content_type == "application/json" {
        return 0;
    }
    ExportTraceServiceResponse::decode(response.bytes().expect("body"))
        .expect("protobuf answer")
        .partial_success
        .map_or(0, |partial| partial.rejected_spans)
}

fn wal_bytes(data_dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(data_dir.join("wal")).expect("wal dir") {
        bytes.extend(std::fs::read(entry.expect("entry").path()).expect("read segment"));
    }
    bytes
}

/// The WAL logs an OTLP/protobuf request as it arrived (inflated) and decodes it again on
/// replay; other requests are logged as Arrow IPC. Either way, after a SIGKILL the rows are
/// exactly those acknowledged: a gzipped request, a JSON one, and one whose invalid spans
/// were refused (replay decodes it again and must refuse the same spans, no more, no fewer).
#[test]
fn every_kind_of_request_replays_to_the_rows_that_were_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--sql-max-rows", "100000"]);

    let gzipped = numbered_request("gzipped", 0, 50).encode_to_vec();
    assert_eq!(
        post(&server, "application/x-protobuf", true, gzipped.clone()),
        0
    );

    let mut spans: Vec<_> = (100..110).map(|n| span(n, n)).collect();
    spans[1].trace_id = vec![0; 16];
    spans[2].span_id = vec![1; 7];
    let partial = request("partial", spans).encode_to_vec();
    assert_eq!(post(&server, "application/x-protobuf", false, partial), 2);

    let start = base_time_ns();
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /json","kind":2,"startTimeUnixNano":"{start}","endTimeUnixNano":"{}"}}]}}]}}]}}"#,
        start + 1_000
    );
    assert_eq!(
        post(&server, "application/json", false, json.into_bytes()),
        0
    );

    let everything = "SELECT * FROM spans ORDER BY service_name, span_id";
    let before = server.sql(everything)["rows"].clone();
    assert_eq!(before.as_array().expect("rows").len(), 50 + 8 + 1);
    let wal = wal_bytes(dir.path());
    assert!(
        wal.windows(gzipped.len()).any(|window| window == gzipped),
        "the WAL holds the inflated protobuf request as it was sent"
    );
    server.kill();

    let server = Server::start(dir.path(), &["--sql-max-rows", "100000"]);
    assert_eq!(server.sql(everything)["rows"], before);
    server.stop();
}

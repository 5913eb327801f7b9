//! Crash safety: spans acknowledged before a SIGKILL are all there after a restart on the
//! same data directory, none twice; Parquet written at shutdown is plain Parquet.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::Server;
use common::otlp::numbered_request;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

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
    collect_parquet(&dir.path().join("spans"), &mut files);
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

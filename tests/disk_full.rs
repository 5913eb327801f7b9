//! Disk full: with the data directory on a small tmpfs that fills up, ingest answers
//! 503 / UNAVAILABLE (never 500, never an ack for spans that are not durable), nothing on
//! disk is left corrupt, and ingest comes back by itself once space returns.
//!
//! Needs root to mount the tmpfs (CI runs as root). Elsewhere it fails with instructions,
//! unless FLOWSCOPE_SKIP_TMPFS_TESTS=1 is set.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use common::ingest::{Outcome, grpc_export, http_export, span_ids};
use common::otlp::numbered_request;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

const SKIP_VARIABLE: &str = "FLOWSCOPE_SKIP_TMPFS_TESTS";

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "32m"), or says why it cannot.
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Self { _dir: dir, path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn mount_or_skip() -> Option<Tmpfs> {
    match Tmpfs::mount("32m") {
        Ok(tmpfs) => Some(tmpfs),
        Err(why) if std::env::var(SKIP_VARIABLE).is_ok_and(|v| v == "1") => {
            eprintln!("skipped: {why} ({SKIP_VARIABLE}=1)");
            None
        }
        Err(why) => panic!(
            "{why}\nthis test mounts a 32 MiB tmpfs as the data directory and needs root: \
             run it as root (sudo -E cargo test --test disk_full), or set {SKIP_VARIABLE}=1 to skip it"
        ),
    }
}

/// Writes zeros into `path` until the filesystem is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(error) if error.raw_os_error() == Some(28) => break, // ENOSPC
            Err(error) => panic!("filling the disk: {error}"),
        }
    }
    let _ = file.sync_all();
    written
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every Parquet segment reads whole with an independent reader; no temporary file is left.
fn assert_segments_intact(data: &Path) -> usize {
    let mut files = Vec::new();
    files_under(&common::segments_dir(data), &mut files);
    let mut rows = 0;
    for file in &files {
        let name = file.to_string_lossy();
        assert!(!name.ends_with(".tmp"), "a temporary file is left: {name}");
        if !name.ends_with(".parquet") {
            continue;
        }
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(file).expect("open"),
        )
        .unwrap_or_else(|e| panic!("{name} is not readable Parquet: {e}"))
        .build()
        .expect("reader");
        rows += reader
            .map(|b| b.unwrap_or_else(|e| panic!("{name}: {e}")).num_rows())
            .sum::<usize>();
    }
    rows
}

fn stored_ids(server: &Server) -> Vec<String> {
    server.sql("SELECT span_id FROM spans WHERE service_name = 'disk'")["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r[0].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn a_full_disk_answers_503_corrupts_nothing_and_ingest_recovers_when_space_returns() {
    let Some(tmpfs) = mount_or_skip() else {
        return;
    };
    let data = tmpfs.path.join("data");
    let args = [
        "--flush-rows",
        "4000",
        "--flush-interval",
        "1s",
        "--sql-max-rows",
        "1000000",
    ];
    let server = Server::start(&data, &args);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let http = reqwest::Client::new();
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut next = 0u64;
    let mut request = |spans: u64| {
        let request = numbered_request("disk", next, spans);
        next += spans;
        request
    };

    // Before: an ordinary server.
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(server.grpc_url())
            .await
            .expect("connect");
        for _ in 0..10 {
            let request = request(300);
            let ids = span_ids(&request);
            assert_eq!(grpc_export(&mut client, request).await, Outcome::Acked);
            acked.extend(ids);
        }
    });

    // Full: every export is refused as retryable, or (if it still fits) acknowledged and
    // durable; never a 500. Long enough for several flush attempts (--flush-interval 1s).
    let filler = tmpfs.path.join("filler");
    let filled = fill(&filler);
    let (mut refused, mut acked_while_full) = (0, 0);
    let full_since = Instant::now();
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(server.grpc_url())
            .await
            .expect("connect");
        let mut round = 0;
        while full_since.elapsed() < Duration::from_secs(4) {
            round += 1;
            let request = request(300);
            let ids = span_ids(&request);
            let outcome = if round % 2 == 0 {
                grpc_export(&mut client, request).await
            } else {
                http_export(&http, &server.traces_url(), &request).await
            };
            match outcome {
                Outcome::Acked => {
                    acked_while_full += 1;
                    acked.extend(ids);
                }
                Outcome::Retryable { what, .. } => {
                    assert!(
                        what.starts_with("UNAVAILABLE") || what == "HTTP 503",
                        "a full disk is 503 / UNAVAILABLE, got {what}"
                    );
                    refused += 1;
                }
                other => panic!("a full disk answered {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(
        refused > 0,
        "with the disk full ({filled} filler bytes) nothing was refused"
    );
    let log = server.log.lock().expect("log").join("\n");
    let wal_failed = log.contains("group commit failed");
    let flush_failed = log.contains("flush to Parquet failed") || log.contains("cannot seal");
    assert!(
        wal_failed,
        "the WAL never hit the full disk; the test did not test anything:\n{log}"
    );
    assert!(
        !log.contains("panicked"),
        "a thread panicked on the full disk:\n{log}"
    );

    // Space returns: ingest resumes by itself, no restart.
    std::fs::remove_file(&filler).expect("remove the filler");
    let freed_at = Instant::now();
    let recovered_after = runtime.block_on(async {
        let mut client = TraceServiceClient::connect(server.grpc_url())
            .await
            .expect("connect");
        let mut recovered = None;
        for _ in 0..10 {
            loop {
                let request = request(300);
                let ids = span_ids(&request);
                match grpc_export(&mut client, request).await {
                    Outcome::Acked => {
                        acked.extend(ids);
                        recovered.get_or_insert(freed_at.elapsed());
                        break;
                    }
                    Outcome::Retryable { .. } => {
                        assert!(
                            freed_at.elapsed() < Duration::from_secs(15),
                            "ingest did not recover within 15s of space returning"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("after space returned: {other:?}"),
                }
            }
        }
        recovered.expect("acknowledged")
    });
    // The flusher recovers too: everything reaches Parquet without a restart.
    let flushed_at = Instant::now();
    loop {
        let status = server.sql_status("SELECT 1").0;
        assert_eq!(status, 200);
        let memory = reqwest::blocking::get(format!("http://{}/api/status", server.api))
            .expect("status")
            .json::<serde_json::Value>()
            .expect("json")["store"]["spans_in_memory"]
            .as_u64()
            .expect("spans_in_memory");
        if memory == 0 {
            break;
        }
        assert!(
            flushed_at.elapsed() < Duration::from_secs(20),
            "{memory} spans still not flushed to Parquet 20s after space returned"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let flush_recovered_after = freed_at.elapsed();
    assert_segments_intact(&data);

    // A crash now, and a replay: exactly the acknowledged spans, each once.
    server.kill();
    let server = Server::start(&data, &args);
    let stored = stored_ids(&server);
    let unique: BTreeSet<String> = stored.iter().cloned().collect();
    assert_eq!(unique.len(), stored.len(), "a span is stored twice");
    let lost: Vec<_> = acked.difference(&unique).take(5).collect();
    assert!(lost.is_empty(), "acknowledged spans lost: {lost:?}");
    let unacked: Vec<_> = unique.difference(&acked).take(5).collect();
    assert!(
        unacked.is_empty(),
        "spans that were refused are stored: {unacked:?}"
    );
    let log = server.log.lock().expect("log").join("\n");
    assert!(!log.contains("corrupt"), "replay found corruption:\n{log}");
    server.stop();
    let rows = assert_segments_intact(&data);
    assert_eq!(
        rows,
        acked.len(),
        "after a clean stop every span is in Parquet"
    );
    eprintln!(
        "disk full: {} spans acknowledged, {refused} exports refused and {acked_while_full} acknowledged while full \
         (wal failed: {wal_failed}, flush or seal failed: {flush_failed}); ingest recovered {recovered_after:?} and \
         the flush {flush_recovered_after:?} after space returned",
        acked.len()
    );
}

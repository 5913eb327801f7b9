//! A crash at each point of the flush protocol (issue 23): after the files are written or
//! uploaded but before the catalog commits them, and after the commit but before the WAL is
//! deleted. The server aborts there (`FLOWSCOPE_TEST_CRASH_AT`, a hook in the flusher);
//! the next start must find every acknowledged span exactly once. Under scripts/test's
//! second pass the files go to S3 and the catalog is in PostgreSQL.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Server;
use common::otlp::numbered_request;

fn crash_at(point: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start_with_env(
        &data,
        &[("FLOWSCOPE_TEST_CRASH_AT", point)],
        &["--flush-interval", "1s"],
    );
    server.export(vec![
        numbered_request("orders", 0, 300),
        numbered_request("payments", 300, 200),
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("the server's status") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not abort at {point}:\n{}",
            server.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "aborted, not exited: {status}");
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(&format!("FLOWSCOPE_TEST_CRASH_AT={point}"))),
        "it aborted at the hook"
    );
    drop(server);

    let server = Server::start(&data, &["--flush-interval", "1s"]);
    assert_eq!(server.count("SELECT count(*) FROM spans"), 500, "{point}");
    assert_eq!(
        server.count("SELECT count(DISTINCT span_id) FROM spans"),
        500,
        "none twice ({point})"
    );
    // Flushed again and read back from files alone.
    server.stop();
    let server = Server::start(&data, &[]);
    assert_eq!(server.count("SELECT count(*) FROM spans"), 500, "{point}");
    server.stop();
}

#[test]
fn a_crash_after_the_upload_and_before_the_commit_loses_and_repeats_nothing() {
    crash_at("after-upload");
}

#[test]
fn a_crash_after_the_commit_and_before_the_wal_is_deleted_loses_and_repeats_nothing() {
    crash_at("after-commit");
}

//! The metadata database in PostgreSQL goes away and comes back (issue 23): ingest and SQL
//! go on meanwhile, flushes wait for the catalog (said in the log) and commit once it is
//! back, and after a restart every span is there exactly once. The PostgreSQL is the test's
//! own (`common::postgres`), stopped with `pg_ctl -m immediate` as a crash would.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Server;
use common::otlp::numbered_request;
use common::postgres::Postgres;

/// The sum of a `/metrics` figure over its labels.
fn figure(server: &Server, name: &str) -> f64 {
    server
        .metrics_text()
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_until(what: &str, server: &Server, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}:\n{}",
            server.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn everything_committed(server: &Server) -> bool {
    figure(server, "flowscope_store_pending_flushes") == 0.0
        && figure(server, "flowscope_store_spans_in_memory") == 0.0
}

#[test]
fn a_postgres_outage_delays_commits_and_loses_nothing() {
    let mut pg = Postgres::start();
    let url = pg.database("outage");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--metadata", url.as_str(), "--flush-interval", "1s"];
    let server = Server::start(&data, &args);
    server.export(vec![numbered_request("orders", 0, 100)]);
    wait_until("the first flush", &server, Duration::from_secs(30), || {
        everything_committed(&server)
    });

    pg.stop();
    // Ingest is acknowledged from the local WAL; SQL reads memory and the files the catalog
    // named before.
    server.export(vec![numbered_request("orders", 100, 200)]);
    assert_eq!(server.count("SELECT count(*) FROM spans"), 300);
    wait_until(
        "the flusher to say it waits for the catalog",
        &server,
        Duration::from_secs(30),
        || {
            server
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|line| line.contains("committing a flush to the catalog failed; retrying"))
        },
    );
    assert!(!everything_committed(&server), "nothing can commit");
    let status = reqwest::blocking::get(format!("http://{}/api/webhooks", server.api))
        .expect("the API answers while the metadata database is down")
        .status();
    assert!(
        status.is_server_error(),
        "the webhooks list needs the database: {status}"
    );
    assert_eq!(server.count("SELECT count(*) FROM spans"), 300);

    pg.resume();
    wait_until(
        "the flushes to commit after the outage",
        &server,
        Duration::from_secs(60),
        || everything_committed(&server),
    );
    let status = reqwest::blocking::get(format!("http://{}/api/webhooks", server.api))
        .unwrap()
        .status();
    assert_eq!(status, 200, "the API reaches the database again");
    server.stop();

    let server = Server::start(&data, &args);
    assert_eq!(server.count("SELECT count(*) FROM spans"), 300);
    assert_eq!(
        server.count("SELECT count(DISTINCT span_id) FROM spans"),
        300,
        "none twice"
    );
    server.stop();
}

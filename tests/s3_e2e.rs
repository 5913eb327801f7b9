//! `flowscope serve --object-store s3://…` against real S3 servers on loopback (s3s-fs and
//! moto_server): spans sent over OTLP end up as Parquet objects in the bucket, none on the
//! local disk; a new server with an empty data directory answers SQL from the bucket alone;
//! and a bucket that goes away during ingest refuses nothing while the ingest buffer holds,
//! then receives every span once it is back.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Server;
use common::otlp::numbered_request;
use common::s3::{Kind, S3};

const PREFIX: &str = "team-a";

fn start(s3: &S3, data_dir: &Path, extra: &[&str]) -> Server {
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let object_store = format!("s3://{}/{PREFIX}", common::s3::BUCKET);
    let args: Vec<&str> = ["--object-store", object_store.as_str()]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    Server::start_with_env(data_dir, &env, &args)
}

fn parquet_keys(s3: &S3) -> Vec<String> {
    let mut keys = s3.keys(&format!("{PREFIX}/spans/"));
    keys.retain(|k| k.ends_with(".parquet"));
    keys
}

fn local_parquet(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                local_parquet(&path)
            } else {
                usize::from(path.extension().is_some_and(|e| e == "parquet"))
            }
        })
        .sum()
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spans_round_trip_through_the_bucket(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(kind, dir.path());
    let first = dir.path().join("first");
    let server = start(&s3, &first, &["--flush-rows", "500"]);
    server.export(
        (0..3)
            .map(|r| numbered_request("s3", r * 400, 400))
            .collect(),
    );
    assert_eq!(server.count("SELECT count(*) FROM spans"), 1200);
    server.stop();

    let keys = parquet_keys(&s3);
    assert!(!keys.is_empty(), "{kind:?}: no Parquet in the bucket");
    assert!(
        keys.iter().all(|k| k.starts_with("team-a/spans/date=")),
        "{keys:?}"
    );
    assert!(
        !s3.keys(PREFIX).iter().any(|k| k.ends_with("_committed")),
        "{kind:?}: the catalog in the metadata database commits flushes, no marker object"
    );
    assert_eq!(
        local_parquet(&first.join("spans")) + local_parquet(&first.join("upload")),
        0,
        "no Parquet in the data directory's own layout"
    );
    assert_eq!(
        local_parquet(&first.join("cache")),
        keys.len(),
        "{kind:?}: each upload is kept in the local cache"
    );

    // Another machine, say: nothing local (no WAL, no metadata database with its catalog),
    // the same bucket: the new catalog takes the files it finds there.
    std::fs::remove_dir_all(&first).unwrap();
    let second = start(&s3, &dir.path().join("second"), &[]);
    assert_eq!(second.count("SELECT count(*) FROM spans"), 1200);
    assert_eq!(
        second.count("SELECT count(DISTINCT span_id) FROM spans"),
        1200
    );
    assert_eq!(
        second.count("SELECT count(*) FROM spans WHERE service_name = 's3'"),
        1200
    );
    second.stop();
}

#[test]
fn spans_round_trip_through_s3s_fs() {
    spans_round_trip_through_the_bucket(Kind::S3sFs);
}

#[test]
fn spans_round_trip_through_moto() {
    spans_round_trip_through_the_bucket(Kind::Moto);
}

#[test]
fn a_bucket_that_goes_away_during_ingest_refuses_nothing_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3::start(Kind::S3sFs, dir.path());
    let server = start(
        &s3,
        &dir.path().join("data"),
        &["--flush-rows", "300", "--flush-interval", "1s"],
    );
    server.export(vec![numbered_request("s3", 0, 300)]);
    wait_until(
        "the first flush is in the bucket",
        Duration::from_secs(30),
        || !parquet_keys(&s3).is_empty(),
    );
    let before = parquet_keys(&s3).len();

    s3.pause();
    // Flushes fail and retry; every request is still acknowledged (from the WAL and memory).
    for r in 1..=10 {
        server.export(vec![numbered_request("s3", r * 300, 300)]);
        std::thread::sleep(Duration::from_millis(200));
    }
    // SQL still answers: the flushed file was kept in the local cache as it went up, the
    // rest is in memory.
    assert_eq!(server.count("SELECT count(*) FROM spans"), 3300);
    assert_eq!(
        parquet_keys(&s3).len(),
        before,
        "nothing reached the bucket"
    );
    wait_until(
        "the flusher says it cannot upload",
        Duration::from_secs(60),
        || {
            server
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("flush to Parquet failed"))
        },
    );
    let pending = |server: &Server| -> u64 {
        server
            .metrics_text()
            .lines()
            .find(|l| l.starts_with("flowscope_store_pending_flushes"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .expect("flowscope_store_pending_flushes in /metrics")
    };
    assert!(pending(&server) > 0, "/metrics says uploads are behind");

    s3.resume();
    wait_until(
        "every span is in the bucket",
        Duration::from_secs(60),
        || {
            pending(&server) == 0
                && server
                    .metrics_text()
                    .lines()
                    .any(|l| l.starts_with("flowscope_store_spans_in_memory") && l.ends_with(" 0"))
        },
    );
    assert_eq!(server.count("SELECT count(*) FROM spans"), 3300);
    server.stop();
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let fresh = start(&s3, &dir.path().join("fresh"), &[]);
    assert_eq!(fresh.count("SELECT count(*) FROM spans"), 3300);
    assert_eq!(
        fresh.count("SELECT count(DISTINCT span_id) FROM spans"),
        3300
    );
    // The files that query read from the bucket are fetched into the new machine's cache:
    // once there, the bucket can go away and SQL still answers.
    let metric = |server: &Server, name: &str| -> u64 {
        server
            .metrics_text()
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    assert!(metric(&fresh, "flowscope_cache_misses_total") > 0);
    let in_bucket: u64 = parquet_keys(&s3).len() as u64;
    wait_until(
        "the bucket's files are in the local cache",
        Duration::from_secs(30),
        || {
            std::fs::read_dir(dir.path().join("fresh").join("cache")).is_ok()
                && local_parquet(&dir.path().join("fresh").join("cache")) as u64 == in_bucket
        },
    );
    s3.pause();
    let hits = metric(&fresh, "flowscope_cache_hits_total");
    let gets = metric(&fresh, "flowscope_object_store_get_requests_total");
    assert!(gets > 0, "the first query's reads reached the bucket");
    // (A bare count(*) reads no data at all: the footers are cached in memory.)
    assert_eq!(
        fresh.count("SELECT count(DISTINCT span_id) FROM spans"),
        3300
    );
    assert!(metric(&fresh, "flowscope_cache_hits_total") > hits);
    assert_eq!(
        metric(&fresh, "flowscope_object_store_get_requests_total"),
        gets,
        "the cache answered every read: no GET reached the bucket"
    );
    s3.resume();
    fresh.stop();
}

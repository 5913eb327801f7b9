//! Faults in a cluster (issue 24): an ingester killed with SIGKILL during ingest and
//! restarted, another aborted inside its first flush (between the upload and the catalog
//! commit) and restarted, then a receiver SIGKILLed, while a client keeps sending through
//! the receivers (going on to the other when one fails). Every span the
//! receiver acknowledged is stored, as the querier counts them: the receiver routes again
//! what an ingester did not take until it is back, and the restarted ingester replays its
//! WAL. Nothing is stored twice: a part made durable by an ingester that died before
//! answering is routed again, and the restarted ingester, which learned the parts it stored
//! from its WAL, takes it without storing it again (`flowscope_collector::dedup`).

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{start, start_with_env, wait_for, wait_for_split};
use common::otlp::numbered_request;
use common::postgres::Postgres;
use common::s3::{Kind, S3};

#[test]
fn nodes_killed_during_ingest_and_inside_a_flush_lose_and_repeat_nothing() {
    let mut pg = Postgres::start();
    let metadata = pg.database("faults");
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(Kind::S3sFs, dir.path());
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    let a = start(&a_dir, &s3, &metadata, "ingester");
    // b aborts itself inside its first flush, after uploading and before committing.
    let b = start_with_env(
        &b_dir,
        &s3,
        &metadata,
        "ingester",
        &[("FLOWSCOPE_TEST_CRASH_AT", "after-upload")],
    );
    let receiver = start(&dir.path().join("r"), &s3, &metadata, "receiver,querier");
    // The client prefers a second receiver, which is killed on the way.
    let r2 = start(&dir.path().join("r2"), &s3, &metadata, "receiver");
    wait_for_split(&receiver, &a, &b);

    // A client sends 100-span requests one after another (each retried on UNAVAILABLE, as
    // exporters do) and counts what was acknowledged.
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let urls = [r2.grpc_url(), receiver.grpc_url()];
    let sender = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next = 0u64;
            while !stop.load(Ordering::SeqCst) && next < 200_000 {
                common::cluster::export_to_any(&urls, numbered_request("orders", next, 100));
                next += 100;
                acked.store(next, Ordering::SeqCst);
            }
        })
    };
    let at_least = |n: u64| {
        wait_for(
            "the client to get acknowledgements",
            Duration::from_secs(60),
            || acked.load(Ordering::SeqCst) >= n,
        )
    };
    // b aborts in its first flush (they come every 2 s) and comes back at once without the
    // hook, well within its leases: its partitions stay its own, so what it had made durable
    // before dying and is sent again reaches it, and it knows it from its WAL. (A node gone
    // past its leases hands its partitions over, and a part it stored but did not answer can
    // then be stored by the next holder too: README, Losing a node.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut b = b;
    while b.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "b did not abort inside its flush"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(b);
    let b = start(&b_dir, &s3, &metadata, "ingester");
    at_least(acked.load(Ordering::SeqCst) + 2_000);
    // a dies in the middle of ingest and comes back on its data directory.
    a.kill();
    let a = start(&a_dir, &s3, &metadata, "ingester");
    let now = acked.load(Ordering::SeqCst);
    at_least(now + 2_000);
    // The receiver the client prefers dies with requests in flight: the client sends them
    // again to the other, and the parts the dead one had forwarded are not stored twice.
    r2.kill();
    let now = acked.load(Ordering::SeqCst);
    at_least(now + 2_000);
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let acked = acked.load(Ordering::SeqCst);

    let count = receiver.count("SELECT count(*) FROM spans");
    let distinct = receiver.count("SELECT count(DISTINCT span_id) FROM spans");
    assert_eq!(distinct as u64, acked, "every acknowledged span is stored");
    // A part an ingester made durable and died before answering is routed again by the
    // receiver, and its WAL has it too: the ingester knows it from its replay.
    let twice = count - distinct;
    eprintln!("{acked} spans acknowledged, {twice} stored twice");
    if twice != 0 {
        for (name, node) in [("a", &a), ("b", &b)] {
            eprintln!(
                "DEBUG {name}: count {} distinct {}",
                node.count("SELECT count(*) FROM spans"),
                node.count("SELECT count(DISTINCT span_id) FROM spans")
            );
        }
        eprintln!("DEBUG dup ids: {}", receiver.sql("SELECT span_id, count(*) FROM spans GROUP BY span_id HAVING count(*) > 1 ORDER BY span_id LIMIT 5"));
        std::thread::sleep(Duration::from_secs(5));
        eprintln!(
            "DEBUG later: {} {}",
            receiver.count("SELECT count(*) FROM spans"),
            receiver.count("SELECT count(DISTINCT span_id) FROM spans")
        );
    }
    assert_eq!(twice, 0, "spans stored twice");
    // After both flush again, the files alone say the same.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(receiver.count("SELECT count(*) FROM spans"), count);
    // A client that sends a request again (its answer lost) has it stored once.
    let again = numbered_request("orders", 500_000, 100);
    common::cluster::export_to(&receiver.grpc_url(), vec![again.clone()]);
    common::cluster::export_to(&receiver.grpc_url(), vec![again]);
    assert_eq!(
        receiver.count("SELECT count(*) FROM spans"),
        count + 100,
        "a request sent twice is stored once"
    );
    for server in [receiver, a, b] {
        server.stop();
    }
    pg.stop();
}

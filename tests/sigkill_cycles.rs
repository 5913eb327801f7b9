//! Fifty SIGKILLs during continuous ingest: a real OTLP/gRPC client keeps sending while the
//! server is killed at a random moment and restarted on the same data directory. At the
//! end every span the client saw acknowledged is stored exactly once: no loss, and no
//! duplicate from replaying a WAL whose spans were already in Parquet.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use common::ingest::{Outcome, grpc_export, span_id_hex};
use common::otlp::numbered_request;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use rand::Rng as _;

const CYCLES: usize = 50;
const CLIENTS: usize = 2;

/// What the clients know: spans acknowledged, and spans whose request was in flight when
/// the server died (they may or may not be stored, but at most once).
#[derive(Default)]
struct Ledger {
    acked: BTreeSet<u64>,
    unknown: BTreeSet<u64>,
    /// Refusals while the server ran, by kind (it may refuse when its store is busy).
    refusals: std::collections::BTreeMap<String, u64>,
}

/// Sends requests of 50..250 spans, each with fresh span numbers, until the server goes.
async fn ingest(
    url: String,
    next: Arc<AtomicU64>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    let Ok(mut client) = TraceServiceClient::connect(url).await else {
        return;
    };
    while !stop.load(Ordering::SeqCst) {
        let count = rand::rng().random_range(50..250u64);
        let first = next.fetch_add(count, Ordering::SeqCst);
        let outcome = grpc_export(&mut client, numbered_request("cycles", first, count)).await;
        let mut ledger = ledger.lock().expect("ledger");
        match outcome {
            Outcome::Acked => ledger.acked.extend(first..first + count),
            // A refusal stores nothing, and a request cut by the kill may or may not be
            // stored (the server may have died between its WAL commit and its answer):
            // either way the spans may be present at most once, and need not be.
            Outcome::Retryable { what, retry_after } => {
                let what = format!("{what} after {retry_after:?}");
                ledger.unknown.extend(first..first + count);
                if !stop.load(Ordering::SeqCst) {
                    *ledger.refusals.entry(what).or_default() += 1;
                }
            }
            Outcome::Disconnected(_) => {
                ledger.unknown.extend(first..first + count);
            }
            Outcome::Wrong(what) => {
                ledger.unknown.extend(first..first + count);
                // Killed mid-answer, tonic may report the broken stream in other ways.
                assert!(
                    stop.load(Ordering::SeqCst),
                    "the server answered {what} while running"
                );
                return;
            }
        }
    }
}

#[test]
fn fifty_sigkills_during_ingest_lose_no_acknowledged_span_and_duplicate_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small flushes, so that kills land before, during and after Parquet commits; a short
    // graph horizon, so that restarts do not rebuild the graph from every stored span.
    let args = [
        "--flush-rows",
        "1500",
        "--flush-interval",
        "1s",
        "--graph-horizon",
        "10s",
        "--sql-max-rows",
        "5000000",
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let next = Arc::new(AtomicU64::new(0));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let mut restarts = Vec::new();
    for cycle in 0..CYCLES {
        let restart = Instant::now();
        let server = Server::start(dir.path(), &args);
        restarts.push(restart.elapsed());
        {
            let log = server.log.lock().expect("log").join("\n");
            assert!(
                !log.contains("corrupt") && !log.contains("does not decode"),
                "cycle {cycle}: replay found corruption:\n{log}"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                runtime.spawn(ingest(
                    server.grpc_url(),
                    next.clone(),
                    ledger.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rand::rng().random_range(100..600)));
        stop.store(true, Ordering::SeqCst);
        server.kill();
        for client in clients {
            runtime.block_on(client).expect("client task");
        }
    }
    let cycles_took = started.elapsed();

    let server = Server::start(dir.path(), &args);
    let rows =
        server.sql("SELECT span_id FROM spans WHERE service_name = 'cycles'")["rows"].clone();
    let stored: Vec<String> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r[0].as_str().expect("id").to_string())
        .collect();
    let unique: BTreeSet<&String> = stored.iter().collect();
    let ledger = ledger.lock().expect("ledger");
    let duplicates = stored.len() - unique.len();
    assert_eq!(duplicates, 0, "spans stored more than once after replay");
    let lost: Vec<u64> = ledger
        .acked
        .iter()
        .copied()
        .filter(|n| !unique.contains(&span_id_hex(*n)))
        .take(10)
        .collect();
    assert!(lost.is_empty(), "acknowledged spans lost: {lost:?}");
    let acked_ids: BTreeSet<String> = ledger.acked.iter().map(|n| span_id_hex(*n)).collect();
    let unknown_ids: BTreeSet<String> = ledger.unknown.iter().map(|n| span_id_hex(*n)).collect();
    let stray: Vec<&&String> = unique
        .iter()
        .filter(|id| !acked_ids.contains(**id) && !unknown_ids.contains(**id))
        .take(10)
        .collect();
    assert!(
        stray.is_empty(),
        "stored spans that were never sent: {stray:?}"
    );
    assert!(
        ledger.acked.len() > CYCLES * 100,
        "too little was acknowledged to mean anything: {}",
        ledger.acked.len()
    );
    let in_flight_stored = unique.len() - ledger.acked.len();
    restarts.sort();
    eprintln!(
        "sigkill cycles: {CYCLES} cycles in {cycles_took:?}; restart to ready median {:?}, max {:?}; \
         {} spans acknowledged, {} stored, {duplicates} duplicates; {} spans in flight at a kill, \
         {in_flight_stored} of them stored; refusals while running {:?}",
        restarts[restarts.len() / 2],
        restarts[restarts.len() - 1],
        ledger.acked.len(),
        stored.len(),
        ledger.unknown.len(),
        ledger.refusals,
    );
}

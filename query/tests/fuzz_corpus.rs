//! The committed fuzz corpus (`fuzz/corpus/wal_replay`, `fuzz/corpus/sql`: seeds and the
//! inputs that once broke something) through the fuzz targets' own checks, so that CI, which
//! builds no fuzzer, still runs every one of them on the stable toolchain. WAL inputs also go
//! through `SpanStore::open` itself: the store holds exactly the rows of the records replay
//! keeps, none invented.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fuzz/corpus.rs"]
mod corpus;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use arrow::array::RecordBatch;
use corpus::corpus;
use flowscope_graph::{GraphConfig, LiveGraph};
use flowscope_model::retention::{retain_started_since, retention_cutoff_ns};
use flowscope_query::fuzzing::{
    assert_read_only, check_decodes, check_wal_replay, sample_batch, sample_payloads,
};
use flowscope_query::graph::GraphView;
use flowscope_query::{SpanStore, SqlConfig, SqlEngine, StoreConfig, WalSync};

#[test]
fn the_wal_corpus_passes_the_fuzz_targets_checks() {
    let payloads = sample_payloads();
    let mut modes = [0usize; 3];
    for (path, bytes) in corpus("wal_replay") {
        let dir = tempfile::tempdir().unwrap();
        if let Err(panic) =
            std::panic::catch_unwind(|| check_wal_replay(dir.path(), &bytes, &payloads))
        {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or(panic.downcast_ref::<&str>().copied());
            panic!(
                "{} fails the wal_replay fuzz checks: {message:?}",
                path.display()
            );
        }
        if let Some(mode) = bytes.first() {
            modes[usize::from(mode % 3)] += 1;
        }
    }
    assert!(
        modes.iter().all(|&n| n > 0),
        "every input shape has seeds: {modes:?}"
    );
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_opened_on_each_wal_segment_holds_exactly_the_rows_of_its_good_records() {
    let mut with_rows = 0;
    for (path, bytes) in corpus("wal_replay") {
        // Whole segments only (mode 0); the other shapes are built by the check above.
        let Some((0, segment)) = bytes.split_first().map(|(m, rest)| (m % 3, rest)) else {
            continue;
        };
        // What replay keeps, read from a copy: the records with a good frame, and the rows
        // of those that decode and started within retention (the longest there is, so only
        // the fuzzer's times before about 1736 are past it).
        let copy = tempfile::tempdir().unwrap();
        std::fs::write(copy.path().join("wal-00000000000000000001.log"), segment).unwrap();
        let cutoff_ns = retention_cutoff_ns(SystemTime::now(), Duration::MAX);
        let mut expected = 0;
        flowscope_query::store::wal::replay(copy.path(), 0, &mut |record| {
            for batch in check_decodes(record).unwrap_or_default() {
                let retained = retain_started_since(batch, cutoff_ns).unwrap();
                expected += retained.batch.map_or(0, |batch| batch.num_rows());
            }
        })
        .unwrap();

        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("wal")).unwrap();
        std::fs::write(
            data.path().join("wal/wal-00000000000000000001.log"),
            segment,
        )
        .unwrap();
        let mut config = StoreConfig::new(data.path());
        config.wal_sync = WalSync::Never;
        config.retention = Duration::MAX;
        let store = SpanStore::open(config)
            .unwrap_or_else(|e| panic!("{}: the store does not open: {e}", path.display()));
        let stored = rows(&store.view().memory_batches());
        assert_eq!(stored, expected, "{}: rows after replay", path.display());
        with_rows += usize::from(stored > 0);
        store.close().await.unwrap();
    }
    assert!(with_rows >= 2, "only {with_rows} WAL seeds hold spans");
}

async fn engine() -> SqlEngine {
    let dir = tempfile::tempdir().unwrap().keep();
    let mut config = StoreConfig::new(dir);
    config.wal_sync = WalSync::Never;
    let store = SpanStore::open(config).unwrap();
    let live = Arc::new(RwLock::new(LiveGraph::new(GraphConfig::default())));
    for (seed, spans) in [(1, 3), (2, 8)] {
        let batch = sample_batch(spans, seed);
        live.write()
            .unwrap()
            .ingest(&batch, 1_544_712_661_000_000_000);
        store.write(batch).await.unwrap();
    }
    let sql = SqlConfig {
        timeout: Duration::from_secs(10),
        memory_limit: 64 << 20,
        ..SqlConfig::default()
    };
    let engine = SqlEngine::new(store.clone(), sql).unwrap();
    let graph = GraphView::with_history(live, store, None, 0, Duration::from_secs(5));
    flowscope_query::graph::register(&engine, &graph).unwrap();
    engine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_corpus_passes_the_fuzz_targets_checks() {
    let engine = engine().await;
    let (mut refused, mut answered) = (0, 0);
    for (path, bytes) in corpus("sql") {
        let Ok(sql) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let plan = engine.checked_plan(sql).await;
        if name.starts_with("refused-") {
            assert!(plan.is_err(), "{name}: the sandbox accepted {sql:?}");
            refused += 1;
            continue;
        }
        let Ok(plan) = plan else { continue };
        assert_read_only(&plan, sql);
        let answer = engine.query(sql, 100).await;
        if name.starts_with("read-") || name.starts_with("readme-") {
            answer.unwrap_or_else(|e| panic!("{name}: {sql:?} does not run: {e}"));
            answered += 1;
        }
    }
    assert!(
        refused >= 5 && answered >= 10,
        "refused {refused}, answered {answered}"
    );
}

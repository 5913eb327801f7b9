//! Arbitrary text as SQL through the sandboxed engine the server builds (the `spans` table
//! over a store holding a few spans, the graph tables and table functions), on its own
//! runtime.
//!
//! No panic (libFuzzer's panic hook makes a panic in any thread, the engine's included, a
//! crash), no stack overflow, no accepted plan that writes, changes settings or reads a file
//! (`flowscope_query::fuzzing::assert_read_only`), and every accepted query runs to an
//! answer or an error within its time limit and memory pool.
#![no_main]

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use flowscope_graph::{GraphConfig, LiveGraph};
use flowscope_query::fuzzing::{assert_read_only, sample_batch};
use flowscope_query::graph::GraphView;
use flowscope_query::{SpanStore, SqlConfig, SqlEngine, StoreConfig, WalSync};
use libfuzzer_sys::fuzz_target;

/// What one accepted query may take before the engine gives up on it.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// The graph's clock: just after the sample spans (December 2018).
const SAMPLE_NOW_NS: i64 = 1_544_712_661_000_000_000;

struct Harness {
    engine: SqlEngine,
    caller: tokio::runtime::Runtime,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let caller = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("a runtime: {e}"));
        let dir = tempfile::tempdir()
            .unwrap_or_else(|e| panic!("a temporary directory: {e}"))
            .keep();
        let mut config = StoreConfig::new(dir);
        config.wal_sync = WalSync::Never;
        let store = SpanStore::open(config).unwrap_or_else(|e| panic!("the store opens: {e}"));
        let live = Arc::new(RwLock::new(LiveGraph::new(GraphConfig::default())));
        for (seed, spans) in [(1, 3), (2, 8)] {
            let batch = sample_batch(spans, seed);
            if let Ok(mut graph) = live.write() {
                graph.ingest(&batch, SAMPLE_NOW_NS);
            }
            caller
                .block_on(store.write(batch))
                .unwrap_or_else(|e| panic!("the store takes the sample spans: {e}"));
        }
        let sql = SqlConfig {
            timeout: QUERY_TIMEOUT,
            memory_limit: 64 << 20,
            ..SqlConfig::default()
        };
        let engine =
            SqlEngine::new(store.clone(), sql).unwrap_or_else(|e| panic!("the engine starts: {e}"));
        let graph = GraphView::with_history(live, store, None, 0, Duration::from_secs(5));
        flowscope_query::graph::register(&engine, &graph)
            .unwrap_or_else(|e| panic!("the graph tables register: {e}"));
        Harness { engine, caller }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let harness = harness();
    let Ok(plan) = harness.caller.block_on(harness.engine.checked_plan(sql)) else {
        return;
    };
    assert_read_only(&plan, sql);
    // Errors (too expensive, too slow, invalid at run time) are answers; a panic is not.
    let _ = harness.caller.block_on(harness.engine.query(sql, 100));
});

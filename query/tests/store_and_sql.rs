//! The store and the SQL engine together, without a network: spans written are queryable
//! at once, survive a flush and a reopen, and the sandbox refuses anything but reading.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use flowscope_model::{SpanBatchBuilder, SpanRecord};
use flowscope_query::{
    QueryError, RequestDecoder, SpanStore, SqlConfig, SqlEngine, StoreConfig, WalSync,
};

const HOUR_NS: i64 = 3_600_000_000_000;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

/// `count` spans of one trace per service, starting at `start_ns`, one millisecond apart.
fn batch(services: &[&str], count: usize, start_ns: i64, seed: u8) -> arrow::array::RecordBatch {
    let mut builder = SpanBatchBuilder::default();
    for (s, service) in services.iter().enumerate() {
        for i in 0..count {
            let mut trace = [0u8; 16];
            trace[0] = seed;
            trace[1] = s as u8 + 1;
            let mut span = [0u8; 8];
            span[0] = seed;
            span[1] = s as u8 + 1;
            span[4..8].copy_from_slice(&(i as u32 + 1).to_be_bytes());
            let start = start_ns + i as i64 * 1_000_000;
            let record = SpanRecord {
                trace_id: &trace,
                span_id: &span,
                parent_span_id: None,
                name: "GET /orders",
                kind: "SERVER",
                service_name: service,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 5_000_000,
                status_code: if i % 10 == 0 { "ERROR" } else { "OK" },
                ..SpanRecord::default()
            };
            builder
                .append(
                    &record,
                    &[("http.route", "/orders")],
                    &[("service.name", *service)],
                    &[],
                    &[],
                )
                .expect("append");
        }
    }
    builder.finish().expect("finish")
}

fn config(dir: &std::path::Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.wal_sync = WalSync::Never;
    config
}

async fn count(engine: &SqlEngine, sql: &str) -> i64 {
    let output = engine
        .query(sql, 100)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let batch = &output.batches[0];
    batch.column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_queryable_before_and_after_flush_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = now_ns();
    let store = SpanStore::open(config(dir.path())).expect("open");
    let engine = SqlEngine::new(store.clone(), SqlConfig::default()).expect("engine");

    store
        .write(batch(&["orders", "billing"], 50, now - 2 * HOUR_NS, 1))
        .await
        .expect("write");
    assert_eq!(
        count(&engine, "SELECT count(*) FROM spans").await,
        100,
        "visible on acknowledgement"
    );

    store.flush().await.expect("flush");
    assert!(store.stats().segments >= 1, "flush wrote Parquet");
    store
        .write(batch(&["orders"], 10, now, 2))
        .await
        .expect("write");
    assert_eq!(
        count(&engine, "SELECT count(*) FROM spans").await,
        110,
        "memory + Parquet, no duplicates"
    );

    let hex = "0101000000000000000000000000000000";
    let trace = &hex[..32];
    let by_trace = format!("SELECT count(*) FROM spans WHERE trace_id = '{trace}'");
    assert_eq!(
        count(&engine, &by_trace).await,
        50,
        "hex comparison against binary storage"
    );
    let recent = "SELECT count(*) FROM spans WHERE start_time > now() - INTERVAL '5 minutes'";
    assert_eq!(count(&engine, recent).await, 10, "time filter");
    let by_attr = "SELECT count(*) FROM spans WHERE attributes['http.route'] = '/orders' AND service_name = 'billing'";
    assert_eq!(
        count(&engine, by_attr).await,
        50,
        "attributes indexed by key"
    );
    let errors = "SELECT count(*) FROM spans WHERE status_code = 'ERROR'";
    assert_eq!(count(&engine, errors).await, 11);

    let output = engine
        .query("SELECT trace_id, span_id, parent_span_id, duration_ns FROM spans WHERE service_name = 'billing' ORDER BY span_id LIMIT 1", 10)
        .await
        .expect("ids");
    let row = &output.batches[0];
    assert_eq!(
        row.column(0).as_string::<i32>().value(0),
        "01020000000000000000000000000000"
    );
    assert_eq!(
        row.column(1).as_string::<i32>().value(0),
        "0102000000000001"
    );
    assert!(row.column(2).is_null(0), "root span has no parent");
    assert_eq!(
        row.column(3).as_primitive::<Int64Type>().value(0),
        5_000_000
    );

    store.close().await.expect("close");
    drop(engine);
    drop(store);

    let store = SpanStore::open(config(dir.path())).expect("reopen");
    let engine = SqlEngine::new(store.clone(), SqlConfig::default()).expect("engine");
    assert_eq!(
        count(&engine, "SELECT count(*) FROM spans").await,
        110,
        "all spans after reopen"
    );
    assert_eq!(
        count(&engine, "SELECT count(DISTINCT span_id) FROM spans").await,
        110,
        "none twice"
    );
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unflushed_spans_come_back_from_the_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SpanStore::open(config(dir.path())).expect("open");
    store
        .write(batch(&["orders"], 25, now_ns(), 3))
        .await
        .expect("write");
    // No close: the store is dropped as a killed process would leave it (threads detached).
    drop(store);
    let store = SpanStore::open(config(dir.path())).expect("reopen");
    let engine = SqlEngine::new(store.clone(), SqlConfig::default()).expect("engine");
    assert_eq!(count(&engine, "SELECT count(*) FROM spans").await, 25);
}

/// A stand-in for the OTLP decoder: this test's "requests" are Arrow IPC streams, which
/// keeps the store's part (tagging, replay, refusal) apart from protobuf decoding.
fn ipc_decoder() -> RequestDecoder {
    RequestDecoder::new(|request| {
        let mut reader = arrow::ipc::reader::StreamReader::try_new(request, None)
            .map_err(|error| error.to_string())?;
        reader.next().transpose().map_err(|error| error.to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_requests_replay_through_the_decoder_and_not_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with_decoder = || {
        let mut config = config(dir.path());
        config.request_decoder = Some(ipc_decoder());
        config
    };
    let store = SpanStore::open(with_decoder()).expect("open");
    let logged = batch(&["orders"], 25, now_ns(), 4);
    let request = flowscope_query::store::encode_batch(&logged).expect("encode");
    store
        .write_request(logged, request.into())
        .await
        .expect("write a request");
    store
        .write(batch(&["billing"], 5, now_ns(), 5))
        .await
        .expect("write a batch");
    drop(store);

    let error = SpanStore::open(config(dir.path())).expect_err("no decoder, no replay");
    assert!(
        error.to_string().contains("without their decoder"),
        "{error}"
    );

    let store = SpanStore::open(with_decoder()).expect("reopen");
    let engine = SqlEngine::new(store.clone(), SqlConfig::default()).expect("engine");
    assert_eq!(
        count(
            &engine,
            "SELECT count(*) FROM spans WHERE service_name = 'orders'"
        )
        .await,
        25
    );
    assert_eq!(count(&engine, "SELECT count(*) FROM spans").await, 30);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_drops_the_spans_of_a_logged_request_that_are_older_than_retention() {
    // The receiver refused the old spans (partial success) and wrote only the current
    // ones; the logged request still holds them all, and replay must not bring them back.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path());
    config.request_decoder = Some(ipc_decoder());
    config.retention = Duration::from_secs(86_400);
    let store = SpanStore::open(config.clone()).expect("open");
    let old = batch(&["old"], 3, now_ns() - 3 * 86_400 * 1_000_000_000, 4);
    let current = batch(&["current"], 2, now_ns(), 4);
    let request = arrow::compute::concat_batches(&old.schema(), [&old, &current])
        .expect("one request of both");
    let request = flowscope_query::store::encode_batch(&request).expect("encode");
    store
        .write_request(current, request.into())
        .await
        .expect("write a request");
    drop(store);
    let store = SpanStore::open(config).expect("reopen");
    let engine = SqlEngine::new(store.clone(), SqlConfig::default()).expect("engine");
    assert_eq!(
        count(
            &engine,
            "SELECT count(*) FROM spans WHERE service_name = 'current'"
        )
        .await,
        2
    );
    assert_eq!(count(&engine, "SELECT count(*) FROM spans").await, 2);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_decoder_a_request_is_logged_as_its_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SpanStore::open(config(dir.path())).expect("open");
    store
        .write_request(
            batch(&["orders"], 7, now_ns(), 6),
            b"not replayable".to_vec().into(),
        )
        .await
        .expect("write");
    drop(store);
    let store = SpanStore::open(config(dir.path())).expect("reopen without a decoder");
    let engine = SqlEngine::new(store.clone(), SqlConfig::default()).expect("engine");
    assert_eq!(count(&engine, "SELECT count(*) FROM spans").await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_segments_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path());
    config.retention = Duration::from_secs(86_400);
    let store = SpanStore::open(config.clone()).expect("open");
    store
        .write(batch(&["old"], 5, now_ns() - 3 * 86_400 * 1_000_000_000, 4))
        .await
        .expect("write");
    store
        .write(batch(&["new"], 5, now_ns(), 5))
        .await
        .expect("write");
    store.close().await.expect("close");
    drop(store);
    // Retention runs when the flusher starts.
    let store = SpanStore::open(config).expect("reopen");
    let engine = SqlEngine::new(store.clone(), SqlConfig::default()).expect("engine");
    let mut remaining = 0;
    for _ in 0..100 {
        remaining = count(&engine, "SELECT count(*) FROM spans").await;
        if remaining == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        remaining, 5,
        "the 3-day-old segment is gone, today's is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_refuses_writes_settings_and_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SpanStore::open(config(dir.path())).expect("open");
    let engine = SqlEngine::new(store, SqlConfig::default()).expect("engine");
    let refused = [
        "CREATE TABLE t AS SELECT 1",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "CREATE VIEW v AS SELECT * FROM spans",
        "DROP TABLE spans",
        "INSERT INTO spans SELECT * FROM spans",
        "DELETE FROM spans",
        "UPDATE spans SET name = 'x'",
        "COPY (SELECT * FROM spans) TO '/tmp/flowscope-copy-test.csv'",
        "EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/flowscope-copy-test.csv'",
        "SET datafusion.runtime.memory_limit = '1T'",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'file:///etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('/etc/passwd')",
    ];
    for sql in refused {
        match engine.query(sql, 10).await {
            Err(QueryError::NotAllowed(_) | QueryError::Invalid(_)) => {}
            other => panic!("{sql} was not refused: {other:?}"),
        }
    }
    assert!(!std::path::Path::new("/tmp/flowscope-copy-test.csv").exists());
    // The plan-only check refuses what the query path refuses, and runs nothing.
    for sql in refused {
        assert!(engine.check(sql).await.is_err(), "{sql} passed the check");
    }
    assert!(!std::path::Path::new("/tmp/flowscope-copy-test.csv").exists());
    match engine.check("SELECT no_such_column FROM spans").await {
        Err(QueryError::Invalid(message)) => {
            assert!(message.contains("no_such_column"), "{message}")
        }
        other => panic!("an unknown column planned: {other:?}"),
    }
    engine
        .check("SELECT service_name, count(*) AS calls FROM spans GROUP BY service_name")
        .await
        .expect("a query over spans plans");
    let listed = engine
        .query(
            "SELECT table_name FROM information_schema.tables WHERE table_name = 'spans'",
            10,
        )
        .await
        .expect("information_schema");
    assert_eq!(listed.num_rows(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expensive_queries_stop_at_their_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SpanStore::open(config(dir.path())).expect("open");
    let limits = SqlConfig {
        timeout: Duration::from_millis(500),
        memory_limit: 32 << 20,
        ..SqlConfig::default()
    };
    let engine = Arc::new(SqlEngine::new(store, limits).expect("engine"));
    let started = std::time::Instant::now();
    let slow = engine
        .query(
            "SELECT count(*) FROM generate_series(1, 100000000000) a",
            10,
        )
        .await;
    assert!(matches!(slow, Err(QueryError::TooExpensive(_))), "{slow:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "timeout honoured: {:?}",
        started.elapsed()
    );
    let big = engine
        .query(
            "SELECT array_agg(value) FROM generate_series(1, 50000000)",
            10,
        )
        .await;
    assert!(matches!(big, Err(QueryError::TooExpensive(_))), "{big:?}");
    let output = engine
        .query("SELECT * FROM generate_series(1, 100)", 10)
        .await
        .expect("small query");
    assert_eq!((output.num_rows(), output.truncated), (10, true));
}

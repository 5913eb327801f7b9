//! The span store with its segments in object storage and its files in the catalog (issue
//! 23): flushes upload Parquet and commit it in the catalog, reopening reads the catalog, a
//! flush cut between upload and commit neither loses nor duplicates a span, an unreachable
//! bucket does not stop ingest, a local data directory moves its segments to the bucket once,
//! a new metadata database over an existing bucket takes its files, and a data directory of
//! the store before the catalog is recorded in it once. `object_store`'s in-memory store
//! stands in for S3 here; `tests/s3_e2e.rs` runs the server against real S3 servers.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use async_trait::async_trait;
use datafusion::execution::object_store::ObjectStoreUrl;
use flowscope_model::{SpanBatchBuilder, SpanRecord};
use flowscope_query::metadata::MetadataDb;
use flowscope_query::store::catalog::{self, Catalog};
use flowscope_query::store::objects::ObjectStorage;
use flowscope_query::{SpanStore, SqlConfig, SqlEngine, StoreConfig, WalSync};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// An object store that refuses everything while `down`: an S3 outage, or a process that
/// died (nothing more reaches the bucket from it).
#[derive(Debug)]
struct Faulty {
    inner: InMemory,
    down: AtomicBool,
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

fn refused() -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: "the test made the bucket unreachable".into(),
    }
}

impl Faulty {
    fn check(&self, _location: Option<&Path>) -> object_store::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(refused());
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check(Some(location))?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(Some(location))?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(None)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        if self.down.load(Ordering::SeqCst) {
            return futures::stream::once(async { Err(refused()) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if self.down.load(Ordering::SeqCst) {
            return futures::stream::once(async { Err(refused()) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.check(None)?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check(Some(to))?;
        self.inner.copy_opts(from, to, options).await
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

/// `count` spans of service `service`, span ids from `first`.
fn batch(service: &str, first: u32, count: u32) -> arrow::array::RecordBatch {
    batch_before(service, first, count, now_ns())
}

/// `count` spans of service `service`, span ids from `first`, starting 1 ms apart up to
/// `now`.
fn batch_before(service: &str, first: u32, count: u32, now: i64) -> arrow::array::RecordBatch {
    let mut builder = SpanBatchBuilder::default();
    for i in first..first + count {
        let mut span = [1u8; 8];
        span[4..].copy_from_slice(&i.to_be_bytes());
        let start = now - i64::from(count - (i - first)) * 1_000_000;
        let record = SpanRecord {
            trace_id: &[9; 16],
            span_id: &span,
            name: "publish",
            kind: "PRODUCER",
            service_name: service,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000,
            status_code: "OK",
            ..SpanRecord::default()
        };
        let none: [(&str, &str); 0] = [];
        builder
            .append(&record, &none, &none, &[], &[])
            .expect("append");
    }
    builder.finish().expect("finish")
}

struct Bucket {
    faulty: Arc<Faulty>,
}

impl Bucket {
    fn new() -> Self {
        Self {
            faulty: Arc::new(Faulty {
                inner: InMemory::new(),
                down: AtomicBool::new(false),
            }),
        }
    }

    fn storage(&self) -> ObjectStorage {
        ObjectStorage::new(
            self.faulty.clone(),
            ObjectStoreUrl::parse("memory://bucket").expect("url"),
            "flowscope",
            tokio::runtime::Handle::current(),
        )
    }

    async fn objects(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .faulty
            .inner
            .list(None)
            .map(|meta| meta.expect("list").location.to_string())
            .collect()
            .await;
        names.sort();
        names
    }
}

fn config(dir: &std::path::Path, objects: Option<ObjectStorage>) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.wal_sync = WalSync::Never;
    config.objects = objects;
    config
}

/// Opens the store on a blocking thread: with object storage, recovery calls the bucket
/// through the runtime, which it may not do from inside a task.
async fn open(config: StoreConfig) -> Arc<SpanStore> {
    tokio::task::spawn_blocking(move || SpanStore::open(config))
        .await
        .expect("join")
        .expect("open")
}

async fn count(store: &Arc<SpanStore>, sql: &str) -> i64 {
    let engine = SqlEngine::new(store.clone(), SqlConfig::default()).expect("engine");
    let output = engine
        .query(sql, 10)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    output.batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

fn parquet_files_under(dir: &std::path::Path) -> usize {
    let mut found = 0;
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found += parquet_files_under(&path);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            found += 1;
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_spans_live_in_the_bucket_and_come_back_from_it_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = Bucket::new();
    let store = open(config(dir.path(), Some(bucket.storage()))).await;
    store.write(batch("orders", 0, 300)).await.expect("write");
    store.flush().await.expect("flush");
    store
        .write(batch("billing", 1_000, 20))
        .await
        .expect("write");
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 320);
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM spans WHERE service_name = 'orders'"
        )
        .await,
        300
    );
    store.close().await.expect("close");
    drop(store);

    let objects = bucket.objects().await;
    assert!(
        !objects.iter().any(|o| o.ends_with("_committed")),
        "the catalog, not a marker object, commits: {objects:?}"
    );
    let parts: Vec<&String> = objects.iter().filter(|o| o.ends_with(".parquet")).collect();
    assert_eq!(parts.len(), 2, "one file per flush: {objects:?}");
    assert!(parts.iter().all(|p| p.starts_with("flowscope/spans/date=")));
    assert_eq!(
        parquet_files_under(dir.path()),
        0,
        "no Parquet on the local disk"
    );

    let store = open(config(dir.path(), Some(bucket.storage()))).await;
    assert_eq!(store.stats().segments, 2);
    assert_eq!(
        count(&store, "SELECT count(DISTINCT span_id) FROM spans").await,
        320
    );
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 320);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_cut_between_upload_and_commit_neither_loses_nor_duplicates_a_span() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = Bucket::new();
    // The catalog on a pool the test can cut: the metadata database gone mid-flush.
    let db = MetadataDb::open_sqlite(&dir.path().join("metadata.sqlite"))
        .await
        .expect("metadata database");
    let pool = db.pool().clone();
    let mut with_catalog = config(dir.path(), Some(bucket.storage()));
    with_catalog.catalog = Some(Catalog::new(
        db,
        &catalog::node_id(dir.path()).expect("node id"),
        "default",
        tokio::runtime::Handle::current(),
    ));
    let store = open(with_catalog).await;
    store.write(batch("orders", 0, 100)).await.expect("write");
    store.flush().await.expect("flush");
    pool.close().await;
    store.write(batch("orders", 100, 50)).await.expect("write");
    // The flush uploads its file, then cannot commit it: it retries, never acks.
    let flushing = {
        let store = store.clone();
        tokio::spawn(async move { store.flush().await })
    };
    let mut uploaded = 0;
    for _ in 0..200 {
        uploaded = bucket
            .objects()
            .await
            .iter()
            .filter(|o| o.ends_with(".parquet"))
            .count();
        if uploaded == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(uploaded, 2, "the second flush's file was uploaded");
    // The process dies here: nothing more reaches the bucket from it.
    bucket.faulty.down.store(true, Ordering::SeqCst);
    flushing.abort();
    drop(store);
    let bucket_now = Bucket {
        faulty: Arc::new(Faulty {
            inner: bucket.faulty.inner.clone(),
            down: AtomicBool::new(false),
        }),
    };

    let store = open(config(dir.path(), Some(bucket_now.storage()))).await;
    assert_eq!(
        store.stats().segments,
        1,
        "the uncommitted upload was removed on start"
    );
    let parquet = bucket_now
        .objects()
        .await
        .into_iter()
        .filter(|o| o.ends_with(".parquet"))
        .count();
    assert_eq!(parquet, 1, "the orphan object is deleted");
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 150);
    assert_eq!(
        count(&store, "SELECT count(DISTINCT span_id) FROM spans").await,
        150
    );
    store.flush().await.expect("flush");
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 150);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_metadata_database_over_an_existing_bucket_takes_its_files() {
    let bucket = Bucket::new();
    let first = tempfile::tempdir().expect("tempdir");
    let store = open(config(first.path(), Some(bucket.storage()))).await;
    store.write(batch("orders", 0, 70)).await.expect("write");
    store.flush().await.expect("flush");
    store.write(batch("orders", 70, 5)).await.expect("write");
    store.close().await.expect("close");
    drop(store);

    // The node and its data directory are lost; the bucket survives.
    let second = tempfile::tempdir().expect("tempdir");
    let store = open(config(second.path(), Some(bucket.storage()))).await;
    assert_eq!(store.stats().segments, 2);
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 75);
    // New spans go on after the files it took: a restart replays only the new ones.
    store.write(batch("billing", 500, 3)).await.expect("write");
    drop(store);
    let store = open(config(second.path(), Some(bucket.storage()))).await;
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 78);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_from_before_the_catalog_is_recorded_in_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(config(dir.path(), None)).await;
    store.write(batch("orders", 0, 30)).await.expect("write");
    store.flush().await.expect("flush");
    store.write(batch("orders", 30, 12)).await.expect("write");
    store.flush().await.expect("flush");
    store.close().await.expect("close");
    drop(store);
    let files = parquet_files_under(dir.path());
    assert_eq!(files, 2);
    // What the store before the catalog left: no metadata database, a marker naming the
    // first flush only, as if the second had been cut before its commit (its WAL is gone
    // here, so only the rule is tested: files past the marker are not taken).
    std::fs::remove_file(dir.path().join("metadata.sqlite")).expect("remove");
    for extra in ["metadata.sqlite-wal", "metadata.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.path().join(extra));
    }
    let first_seq = {
        let mut seqs: Vec<String> = Vec::new();
        let mut stack = vec![dir.path().join("spans")];
        while let Some(at) = stack.pop() {
            for entry in std::fs::read_dir(&at).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    seqs.push(name.to_string());
                }
            }
        }
        seqs.sort();
        seqs[0]
            .trim_start_matches("part-")
            .trim_end_matches(".parquet")
            .parse::<u64>()
            .expect("seq")
    };
    std::fs::write(
        dir.path().join("spans").join("_committed"),
        first_seq.to_string(),
    )
    .expect("marker");

    let store = open(config(dir.path(), None)).await;
    assert_eq!(store.stats().segments, 1, "the file past the marker went");
    assert_eq!(parquet_files_under(dir.path()), 1);
    assert!(!dir.path().join("spans").join("_committed").exists());
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 30);
    store.close().await.expect("close");
    drop(store);
    let store = open(config(dir.path(), None)).await;
    assert_eq!(store.stats().segments, 1);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bucket_does_not_stop_ingest_and_uploads_catch_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = Bucket::new();
    let store = open(config(dir.path(), Some(bucket.storage()))).await;
    bucket.faulty.down.store(true, Ordering::SeqCst);
    for round in 0..5u32 {
        store
            .write(batch("orders", round * 100, 100))
            .await
            .expect("acknowledged while the bucket is down");
        // A flush that cannot finish: started, not awaited.
        let store = store.clone();
        tokio::spawn(async move { store.flush().await });
    }
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 500);
    assert_eq!(store.stats().segments, 0, "nothing reached the bucket");
    bucket.faulty.down.store(false, Ordering::SeqCst);
    store.flush().await.expect("flush once the bucket is back");
    assert_eq!(store.stats().spans_in_segments, 500, "every span uploaded");
    assert_eq!(store.stats().spans_in_memory, 0);
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 500);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_data_directory_moves_its_segments_to_the_bucket_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(config(dir.path(), None)).await;
    store.write(batch("orders", 0, 40)).await.expect("write");
    store.flush().await.expect("flush");
    store.write(batch("orders", 40, 2)).await.expect("write");
    store.close().await.expect("close");
    drop(store);
    assert_eq!(parquet_files_under(dir.path()), 2);

    let bucket = Bucket::new();
    let store = open(config(dir.path(), Some(bucket.storage()))).await;
    assert_eq!(store.stats().segments, 2);
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 42);
    store.close().await.expect("close");
    drop(store);
    assert_eq!(parquet_files_under(dir.path()), 0, "moved, not copied");
    assert!(!dir.path().join("spans").join("_committed").exists());

    let store = open(config(dir.path(), Some(bucket.storage()))).await;
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 42);
    store.close().await.expect("close");
}

/// An empty kept graph bucket starting at `start_ns`, in the format `StoredBucket` reads.
fn stored_bucket(start_ns: i64) -> flowscope_graph::StoredBucket {
    let mut bytes = b"FSB1".to_vec();
    bytes.extend_from_slice(&start_ns.to_le_bytes());
    for _ in 0..3 {
        bytes.extend_from_slice(&0u32.to_le_bytes());
    }
    flowscope_graph::StoredBucket::decode(&bytes).expect("a bucket")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_hours_of_graph_buckets_move_to_the_bucket_and_read_back() {
    use flowscope_query::graph::rollups::Rollups;
    const HOUR: i64 = 3_600_000_000_000;
    const TEN_S: i64 = 10_000_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = Bucket::new();
    let db = MetadataDb::open_sqlite(&dir.path().join("metadata.sqlite"))
        .await
        .expect("metadata database");
    let node = catalog::node_id(dir.path()).expect("node id");
    let catalog = Catalog::new(db, &node, "default", tokio::runtime::Handle::current());
    let open =
        || Rollups::open_with(dir.path(), Some((bucket.storage(), catalog.clone()))).expect("open");
    let rollups = open();
    let base = 490_000 * HOUR;
    let every = |from: i64, to: i64| -> Vec<_> {
        (from..to)
            .step_by(TEN_S as usize)
            .map(stored_bucket)
            .collect()
    };
    // Half an hour: its hour is not complete, so it stays local.
    rollups
        .append(&every(base, base + HOUR / 2), base, base + HOUR / 2)
        .expect("append");
    let sealed = |objects: Vec<String>| -> Vec<String> {
        objects
            .into_iter()
            .filter(|o| o.contains("/graph/"))
            .collect()
    };
    assert!(sealed(bucket.objects().await).is_empty());
    // Past the next hour's end: both hours are complete and move.
    rollups
        .append(
            &every(base + HOUR / 2, base + 2 * HOUR),
            base + HOUR / 2,
            base + 2 * HOUR,
        )
        .expect("append");
    let objects = sealed(bucket.objects().await);
    assert_eq!(objects.len(), 2, "{objects:?}");
    let local: Vec<_> = std::fs::read_dir(dir.path().join("graph"))
        .expect("graph dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("buckets-"))
        .collect();
    assert!(local.is_empty(), "moved, not copied: {local:?}");
    let starts = |found: Vec<flowscope_graph::StoredBucket>| -> Vec<i64> {
        let mut starts: Vec<i64> = found.iter().map(|b| b.start_ns()).collect();
        starts.sort_unstable();
        starts
    };
    let expected: Vec<i64> = (base..base + 2 * HOUR).step_by(TEN_S as usize).collect();
    let found = rollups
        .load(base, base + 2 * HOUR)
        .expect("load")
        .expect("covered");
    assert_eq!(starts(found), expected, "each bucket once");
    // Another life of the process reads them from the bucket as well.
    drop(rollups);
    let again = open();
    let found = again
        .load(base + HOUR / 4, base + HOUR + HOUR / 4)
        .expect("load")
        .expect("covered");
    assert_eq!(
        starts(found).len() as i64,
        HOUR / TEN_S,
        "an hour's buckets across two sealed hours"
    );
    // Retention deletes the objects and their rows.
    again.remove_older_than(base + 3 * HOUR).expect("retention");
    assert!(sealed(bucket.objects().await).is_empty());
    assert!(
        catalog
            .files_of(catalog::KIND_ROLLUPS)
            .expect("rows")
            .is_empty()
    );
}

/// Compaction on `objects` (the local disk when `None`): ten small flushes of one past hour
/// become one file, swapped in while queries see every span once, and the next start finds
/// only the merged file; the old files wait out the grace period.
async fn compaction_merges_small_files(objects: Option<(Bucket, ObjectStorage)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = |compact_every: Duration| {
        let mut settings = config(dir.path(), objects.as_ref().map(|(_, o)| o.clone()));
        settings.compact_every = compact_every;
        settings.flush_rows = 10_000;
        settings
    };
    // Two hours ago, in the middle of that hour: settled.
    let hour = 3_600_000_000_000i64;
    let past = (now_ns() - 2 * hour).div_euclid(hour) * hour + hour / 2;
    let store = open(settings(Duration::from_secs(3600))).await;
    for flush in 0..10u32 {
        store
            .write(batch_before("orders", flush * 50, 50, past))
            .await
            .expect("write");
        store.flush().await.expect("flush");
    }
    assert_eq!(store.stats().segments, 10);
    store.close().await.expect("close");
    let store = open(settings(Duration::from_millis(100))).await;
    let mut segments = store.stats().segments;
    for _ in 0..100 {
        segments = store.stats().segments;
        if segments == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(segments, 1, "ten files of one hour merged into one");
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 500);
    assert_eq!(
        count(&store, "SELECT count(DISTINCT span_id) FROM spans").await,
        500
    );
    store.close().await.expect("close");

    let mut settings = config(dir.path(), objects.as_ref().map(|(_, o)| o.clone()));
    settings.compact_every = Duration::from_secs(3600);
    let store = open(settings).await;
    assert_eq!(
        store.stats().segments,
        1,
        "the catalog names the merged file"
    );
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 500);
    let files = match &objects {
        None => parquet_files_under(&dir.path().join("spans")),
        Some((bucket, _)) => bucket
            .objects()
            .await
            .iter()
            .filter(|o| o.ends_with(".parquet"))
            .count(),
    };
    assert_eq!(files, 11, "the old files are kept for the grace period");
    store.close().await.expect("close");

    // The metadata database is lost: every file found is taken, except those merged into
    // another file found there too.
    let other = tempfile::tempdir().expect("tempdir");
    let settings = match &objects {
        None => {
            for name in [
                "metadata.sqlite",
                "metadata.sqlite-wal",
                "metadata.sqlite-shm",
            ] {
                let _ = std::fs::remove_file(dir.path().join(name));
            }
            config(dir.path(), None)
        }
        Some((_, storage)) => config(other.path(), Some(storage.clone())),
    };
    let store = open(settings).await;
    assert_eq!(store.stats().segments, 1, "only the merged file is taken");
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 500);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_small_files_of_an_hour_on_local_disk() {
    compaction_merges_small_files(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_small_files_of_an_hour_in_the_bucket() {
    let bucket = Bucket::new();
    let storage = bucket.storage();
    compaction_merges_small_files(Some((bucket, storage))).await;
}

/// A slow bucket (every PUT takes 800 ms, every GET 20 ms, `object_store`'s
/// `ThrottledStore`): writes are acknowledged at the WAL's pace while the upload crawls,
/// SQL sees every span meanwhile, and once the uploads are done a new start finds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_bucket_delays_uploads_not_writes() {
    use object_store::throttle::{ThrottleConfig, ThrottledStore};
    let dir = tempfile::tempdir().expect("tempdir");
    let slow: Arc<dyn object_store::ObjectStore> = Arc::new(ThrottledStore::new(
        InMemory::new(),
        ThrottleConfig {
            wait_put_per_call: Duration::from_millis(800),
            wait_get_per_call: Duration::from_millis(20),
            ..ThrottleConfig::default()
        },
    ));
    let storage = || {
        ObjectStorage::new(
            slow.clone(),
            ObjectStoreUrl::parse("memory://slow").expect("url"),
            "flowscope",
            tokio::runtime::Handle::current(),
        )
    };
    let store = open(config(dir.path(), Some(storage()))).await;
    store.write(batch("orders", 0, 100)).await.expect("write");
    let flushing = {
        let store = store.clone();
        tokio::spawn(async move { store.flush().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    for n in 1..5u32 {
        store
            .write(batch("orders", n * 100, 100))
            .await
            .expect("write");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(600),
        "writes waited for the upload: {took:?}"
    );
    assert!(!flushing.is_finished(), "the upload is still under way");
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 500);
    flushing.await.expect("join").expect("flush");
    store.flush().await.expect("flush");
    assert_eq!(count(&store, "SELECT count(*) FROM spans").await, 500);
    store.close().await.expect("close");
    let store = open(config(dir.path(), Some(storage()))).await;
    assert_eq!(
        count(&store, "SELECT count(DISTINCT span_id) FROM spans").await,
        500
    );
    store.close().await.expect("close");
}

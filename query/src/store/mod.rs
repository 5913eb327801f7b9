//! The span store: WAL, memtable and Parquet segments behind one handle.
//!
//! ```text
//!  write(batch) ──try_send──> writer thread ──> WAL group commit (fsync) ──> memtable ──> ack
//!                 (bounded)        │ every flush_rows or flush_interval: seal the WAL segment,
//!                                  ▼ freeze the memtable
//!                            flusher thread ──> Parquet per hour ──> catalog commit ──> delete WAL
//!                                  └── retention: drop old segments from the catalog, delete
//!                                      their files after a grace period
//! ```
//!
//! `write_request(batch, request)` is `write` for a batch decoded from an OTLP/protobuf request:
//! the WAL logs the request's own bytes and replay decodes them again.
//!
//! Queries read a [`View`]: memtable batches (active and frozen) plus committed segments,
//! swapped atomically under one lock, so a span is never seen twice nor missed while it
//! moves from memory to Parquet.

pub mod cache;
pub mod catalog;
pub mod compactor;
pub mod counted;
pub mod objects;
pub(crate) mod read;
pub mod segment;
pub mod wal;

use std::collections::HashSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;
use flowscope_base::liveness::{Liveness, Stage, StageGuard};
use flowscope_base::memory::MemoryBudget;
use flowscope_model::retention::{retain_started_since, retention_cutoff_ns};
use flowscope_model::storage_schema;
use tokio::sync::oneshot;

use crate::error::StoreError;
use segment::{Place, Segment};
use wal::{Wal, WalSync};

/// How the store writes and keeps spans.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub wal_sync: WalSync,
    /// Flush the memtable to Parquet once it holds this many spans...
    pub flush_rows: usize,
    /// ...or once its oldest span has waited this long.
    pub flush_interval: Duration,
    /// Segments whose newest span started longer ago than this are deleted.
    pub retention: Duration,
    /// The ingest buffer: spans waiting in memory (queued, in the memtable, being flushed)
    /// take bytes from it, and past its limit writes are refused as retryable until flushes
    /// catch up. One budget shared by every store of the process (one per tenant), so
    /// memory does not grow with the number of tenants.
    pub memory: Arc<MemoryBudget>,
    /// Turns an OTLP protobuf request back into its spans. With one, [`SpanStore::write_request`]
    /// logs the request's own bytes (half the size of the batch's Arrow IPC, and nothing to
    /// encode) and replay decodes them again; without one, every record is Arrow IPC.
    pub request_decoder: Option<RequestDecoder>,
    /// Where the writer and flusher threads register, count the errors they survive and
    /// are marked stopped if they end before shutdown; one per process, shared like `memory`.
    pub liveness: Arc<Liveness>,
    /// Where committed segments go: object storage (`--object-store`), or the local disk
    /// under `data_dir` when `None`. The WAL stays local either way.
    pub objects: Option<objects::ObjectStorage>,
    /// This store's part of the catalog (the metadata database's table of committed files).
    /// `None` opens `<data_dir>/metadata.sqlite` as the default tenant's, on a runtime of its
    /// own: for stores opened outside the server.
    pub catalog: Option<catalog::Catalog>,
    /// How often the flusher looks for small files to merge (compaction).
    pub compact_every: Duration,
    /// Another process merges this store's small files: a cluster's compactor (the
    /// `compactor` role, [`compactor::ClusterCompactor`]). The flusher then merges none, and
    /// every `compact_every` reads its catalog rows instead, to take in the files the
    /// compactor swapped in and let go of those it swapped out.
    pub compacted_elsewhere: bool,
}

/// Decodes the protobuf request a WAL record holds into the batch it was written with:
/// `Ok(None)` when none of its spans were accepted. It must be the decoder that produced the
/// batch, so replay restores the same rows.
#[derive(Clone)]
pub struct RequestDecoder(Arc<DecodeRequest>);

type DecodeRequest = dyn Fn(&[u8]) -> Result<Option<RecordBatch>, String> + Send + Sync;

impl RequestDecoder {
    pub fn new(
        decode: impl Fn(&[u8]) -> Result<Option<RecordBatch>, String> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(decode))
    }
}

impl std::fmt::Debug for RequestDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestDecoder")
    }
}

/// The first bytes of a WAL record that holds an OTLP protobuf request. An Arrow IPC record
/// starts with the continuation marker `0xFFFFFFFF`, so neither can be taken for the other
/// (and logs written before requests were logged replay as they did).
const REQUEST_TAG: &[u8; 4] = b"OTLP";

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            wal_sync: WalSync::Always,
            flush_rows: 256 * 1024,
            flush_interval: Duration::from_secs(60),
            retention: Duration::from_secs(7 * 86_400),
            memory: Arc::new(MemoryBudget::unlimited().with_ingest_buffer(1 << 30)),
            request_decoder: None,
            liveness: Liveness::new(),
            objects: None,
            catalog: None,
            compact_every: COMPACT_EVERY,
            compacted_elsewhere: false,
        }
    }
}

/// What a query reads: spans in memory and committed Parquet segments.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub memory: Vec<RecordBatch>,
    pub frozen: Vec<Arc<Frozen>>,
    pub segments: Vec<Arc<Segment>>,
}

impl View {
    /// Every in-memory batch, active and frozen.
    pub fn memory_batches(&self) -> Vec<RecordBatch> {
        let frozen = self.frozen.iter().flat_map(|f| f.batches.iter().cloned());
        frozen.chain(self.memory.iter().cloned()).collect()
    }
}

/// A memtable sealed for flushing, covered by WAL segments up to `wal_seq`.
#[derive(Debug)]
pub struct Frozen {
    pub wal_seq: u64,
    pub batches: Vec<RecordBatch>,
    bytes: usize,
}

/// Counters for logs, health and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub spans_written: u64,
    pub spans_in_memory: u64,
    pub segments: u64,
    pub segment_bytes: u64,
    pub spans_in_segments: u64,
    pub buffered_bytes: u64,
    pub replayed_records: u64,
    /// Memtables sealed and not yet committed to Parquet: how far behind flushes (and
    /// uploads, with object storage) are.
    pub pending_flushes: u64,
    /// The local disk cache of object storage (shared by every store of the process);
    /// zeros without one.
    pub cache: cache::CacheStats,
    /// Requests sent to object storage since start (shared by every store of the process;
    /// zero without one).
    pub requests: counted::RequestStats,
}

struct Shared {
    view: RwLock<View>,
    buffered_bytes: AtomicUsize,
    spans_written: AtomicU64,
    replayed_records: AtomicU64,
    config: StoreConfig,
}

type Ack = oneshot::Sender<Result<(), StoreError>>;

/// One acknowledged-on-commit write: the WAL record, the batch for the memtable, its size
/// in the buffer budget, and whom to tell.
struct Append {
    record: Record,
    batch: RecordBatch,
    bytes: usize,
    ack: Ack,
}

/// A WAL record before it is written: a tag and a body, one payload once framed.
#[derive(Default)]
struct Record {
    tag: &'static [u8],
    body: Bytes,
}

impl Record {
    fn len(&self) -> usize {
        self.tag.len() + self.body.len()
    }
}

enum Command {
    Append(Append),
    Flush {
        ack: oneshot::Sender<Result<(), StoreError>>,
    },
}

struct FlushJob {
    frozen: Option<Arc<Frozen>>,
    acks: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

/// The handle receivers write to and queries read from.
pub struct SpanStore {
    shared: Arc<Shared>,
    commands: Mutex<Option<SyncSender<Command>>>,
    /// Disconnects once both stages have ended.
    finished: Mutex<Option<Receiver<()>>>,
}

impl std::fmt::Debug for SpanStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanStore")
            .field("data_dir", &self.shared.config.data_dir)
            .finish()
    }
}

const COMMAND_QUEUE: usize = 256;
/// Memtables frozen and not yet in Parquet, the one being written included. The writer
/// freezes on its own (rows, interval, memory pressure) only below this, so its sends never
/// wait; past it the active memtable grows instead, held by the ingest buffer as before. An
/// explicit flush (`SpanStore::flush`, `close`) freezes anyway and may wait for room.
const FLUSH_QUEUE: usize = 4;
const MAX_GROUP: usize = 512;
/// A group of requests averaging fewer spans than this is concatenated into one batch.
const COMPACT_BELOW_ROWS: usize = 256;

fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

/// Arrow IPC stream bytes of one batch: the WAL record payload.
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>, StoreError> {
    // The stream is the batch's buffers (at most their capacity) plus metadata and padding
    // to 64 bytes per buffer. Sized any smaller, the Vec grew once for nearly every
    // request, copying what was already written.
    let mut out = Vec::with_capacity(batch.get_array_memory_size() + 16 * 1024);
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// The batches of one WAL record (the inverse of [`encode_batch`]), refused unless they are
/// in `storage_schema()`: what replay keeps of each record.
///
/// A record can pass its checksum and still not be what this version wrote (a byte changed
/// before the checksum was taken, a future version's type), and arrow's IPC reader does not
/// take such input gracefully (both found by `fuzz/`'s `wal_replay`): it sizes buffers from
/// the lengths the stream claims before reading them, so one bad length is an allocation of
/// up to a terabyte and an abort; and it panics on some messages (`unimplemented!` for an
/// unknown type id). Either would stop the server from starting at all, so the lengths are
/// checked first and a panic is caught, and the record is refused like any other that does
/// not decode.
pub(crate) fn decode_batches(payload: &[u8]) -> Result<Vec<RecordBatch>, StoreError> {
    check_ipc_lengths(payload)?;
    std::panic::catch_unwind(|| read_batches(payload)).unwrap_or_else(|_| {
        Err(StoreError::Corrupt(
            "a WAL record is not Arrow IPC this version can read".into(),
        ))
    })
}

/// Whether a WAL record holds an OTLP request (else it is Arrow IPC).
fn is_request(payload: &[u8]) -> bool {
    payload.starts_with(REQUEST_TAG)
}

/// The batches of one WAL record of either kind: an OTLP request decoded by `decoder`, or
/// Arrow IPC.
fn decode_record(payload: &[u8], decoder: &RequestDecoder) -> Result<Vec<RecordBatch>, StoreError> {
    let Some(request) = payload.strip_prefix(REQUEST_TAG) else {
        return decode_batches(payload);
    };
    let RequestDecoder(decode) = decoder;
    let batch = decode(request).map_err(|error| {
        StoreError::Corrupt(format!(
            "a WAL record's OTLP request does not decode: {error}"
        ))
    })?;
    match batch {
        Some(batch) if batch.schema() != storage_schema() => Err(StoreError::Corrupt(
            "a WAL record's OTLP request decodes to a schema this version does not store".into(),
        )),
        Some(batch) => Ok(vec![batch]),
        None => Ok(Vec::new()),
    }
}

/// The rows of replayed `batches` that started at or after `cutoff_ns`, and how many did not.
fn retained(
    batches: Vec<RecordBatch>,
    cutoff_ns: i64,
) -> Result<(Vec<RecordBatch>, usize), StoreError> {
    let mut kept = Vec::with_capacity(batches.len());
    let mut expired = 0;
    for batch in batches {
        let retained = retain_started_since(batch, cutoff_ns)?;
        expired += retained.expired;
        kept.extend(retained.batch);
    }
    Ok((kept, expired))
}

/// Refuses an IPC stream any of whose messages claims metadata or a body longer than what
/// is left of the record. Walks the framing as arrow's `MessageReader` does: an optional
/// `0xFFFFFFFF` continuation, an `i32` metadata length (0 ends the stream), the `Message`
/// flatbuffer, then `bodyLength` bytes.
fn check_ipc_lengths(payload: &[u8]) -> Result<(), StoreError> {
    let corrupt =
        || StoreError::Corrupt("a WAL record's Arrow IPC lengths run past its end".into());
    let mut rest = payload;
    loop {
        // A stream cut short is for arrow to refuse: it allocates nothing it has not read.
        let Some((word, after)) = rest.split_first_chunk::<4>() else {
            return Ok(());
        };
        let (meta_len, after) = if *word == [0xff; 4] {
            let Some((word, after)) = after.split_first_chunk::<4>() else {
                return Ok(());
            };
            (i32::from_le_bytes(*word), after)
        } else {
            (i32::from_le_bytes(*word), after)
        };
        if meta_len == 0 {
            return Ok(());
        }
        let meta_len = usize::try_from(meta_len).map_err(|_| corrupt())?;
        let (meta, after) = after.split_at_checked(meta_len).ok_or_else(corrupt)?;
        let message = arrow::ipc::root_as_message(meta).map_err(|_| corrupt())?;
        let body_len = usize::try_from(message.bodyLength()).map_err(|_| corrupt())?;
        rest = after.get(body_len..).ok_or_else(corrupt)?;
    }
}

fn read_batches(payload: &[u8]) -> Result<Vec<RecordBatch>, StoreError> {
    let reader = StreamReader::try_new(Cursor::new(payload), None)?;
    let mut batches = Vec::new();
    for batch in reader {
        let batch = batch?;
        if batch.schema() != storage_schema() {
            return Err(StoreError::Corrupt(
                "a WAL record has a schema this version does not know".into(),
            ));
        }
        batches.push(batch);
    }
    Ok(batches)
}

impl SpanStore {
    /// Opens a store outside the server (tests, tools): loads committed segments, replays
    /// the WAL, and runs the writer and flusher on threads of their own. Returns once every
    /// acknowledged span is readable again. The server instead takes the stages from
    /// [`Recovered::stages`] and starts them in its pipeline.
    pub fn open(config: StoreConfig) -> Result<Arc<Self>, StoreError> {
        let (store, stages) = Self::recover(config)?.stages(None)?;
        for stage in stages.into_array() {
            std::thread::Builder::new()
                .name(stage.thread_name().into())
                .spawn(move || stage.run())?;
        }
        Ok(store)
    }

    /// The first half of [`SpanStore::open`]: loads the committed segments and replays the
    /// WAL, starting nothing, so that a downstream stage can take the spans stored before
    /// (`Recovered::read_stored_since`) and the replayed ones before any new commit.
    pub fn recover(config: StoreConfig) -> Result<Recovered, StoreError> {
        let place = segment::Place::new(&config.data_dir, config.objects.as_ref());
        place.prepare()?;
        let catalog = match &config.catalog {
            Some(catalog) => catalog.clone(),
            None => catalog::Catalog::open_private(&config.data_dir, DEFAULT_TENANT)?,
        };
        let committed = open_catalog(&place, &catalog, &config.data_dir)?;
        let segments: Vec<Segment> = catalog
            .files()?
            .into_iter()
            .map(|file| place.segment(file))
            .collect();
        let mut replayed = Vec::new();
        let mut undecodable = 0usize;
        // Requests found with no decoder to read them: the store refuses to open rather than
        // drop spans that `flowscope serve` would read.
        let mut without_decoder = 0usize;
        // A logged request holds every span the client sent, those the receiver refused as
        // older than retention included; they are dropped here, by the clock now, which is
        // later than the receiver's: at least the refused ones go, and any other that has
        // aged past retention since, which retention would delete anyway.
        let cutoff_ns = retention_cutoff_ns(SystemTime::now(), config.retention);
        let mut expired = 0usize;
        let report = wal::replay(&wal_dir(&config.data_dir), committed, &mut |payload| {
            let decoded = match &config.request_decoder {
                Some(decoder) => decode_record(payload, decoder),
                None if is_request(payload) => {
                    without_decoder += 1;
                    return;
                }
                None => decode_batches(payload),
            };
            match decoded.and_then(|batches| retained(batches, cutoff_ns)) {
                Ok((batches, dropped)) => {
                    replayed.extend(batches);
                    expired += dropped;
                }
                Err(error) => {
                    undecodable += 1;
                    tracing::error!(%error, "wal: skipping a record that does not decode");
                }
            }
        })?;
        if without_decoder > 0 {
            return Err(StoreError::Unavailable(format!(
                "the write-ahead log holds {without_decoder} OTLP requests and this store was \
                 opened without their decoder; open the data directory with `flowscope serve`"
            )));
        }
        Ok(Recovered {
            config,
            catalog,
            committed,
            segments,
            replayed,
            report,
            expired,
            undecodable,
        })
    }
}

/// A test hook into the flush protocol: with `FLOWSCOPE_TEST_CRASH_AT=after-upload` (files
/// written or uploaded, not committed) or `after-commit` (committed in the catalog, the WAL
/// not yet deleted) the process aborts at that point of its first flush, as a crash there
/// would end it (`tests/flush_crash_e2e.rs`). Unset, nothing happens.
fn crash_point(point: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("FLOWSCOPE_TEST_CRASH_AT").ok());
    if at.as_deref() == Some(point) {
        eprintln!("FLOWSCOPE_TEST_CRASH_AT={point}: aborting here, as asked");
        std::process::abort();
    }
}

/// The tenant a store opened outside the server belongs to in the catalog.
const DEFAULT_TENANT: &str = "default";

/// Brings the catalog and the files at `place` into agreement, returning the committed WAL
/// position: on the first start with a catalog, records the files an earlier version
/// committed by marker file (once, logged); moves the files of a data directory to object
/// storage when the store now has one (once, logged); removes files no committed flush
/// names (an upload or flush interrupted before its commit).
fn open_catalog(
    place: &segment::Place,
    catalog: &catalog::Catalog,
    data_dir: &Path,
) -> Result<u64, StoreError> {
    let location = place.catalog_location();
    let state = match catalog.state()? {
        Some(state) => state,
        None => {
            // Before the catalog a marker file named the last committed flush: files past
            // it were never committed. With neither a row nor a marker (a new metadata
            // database over existing segments: a lost data directory, a new node on the
            // same bucket) every file found is taken as committed.
            let legacy =
                Place::new(data_dir, None).has_legacy_marker()? || place.has_legacy_marker()?;
            let migrated = place.migrate_local(data_dir)?;
            let marker = place.read_committed()?;
            let segments = place.load_segments(if legacy { marker } else { u64::MAX })?;
            let committed = segments
                .iter()
                .map(|segment| segment.wal_seq)
                .max()
                .unwrap_or(0)
                .max(marker);
            let files: Vec<_> = segments
                .iter()
                .map(|segment| place.catalog_file(segment, segment.wal_seq))
                .collect();
            catalog.commit(&location, &files, committed)?;
            if legacy {
                place.remove_legacy_marker()?;
                tracing::info!(
                    segments = files.len(),
                    moved_to_object_storage = migrated,
                    at = %place.describe(),
                    "recorded the committed segments in the catalog (once); the catalog, not the _committed file, now says what is committed"
                );
            } else if !files.is_empty() {
                tracing::info!(
                    segments = files.len(),
                    at = %place.describe(),
                    "the catalog had no record of this store: recorded the segments found there as committed"
                );
            }
            catalog::StoreState {
                committed_wal_seq: committed,
                location: location.clone(),
            }
        }
    };
    if state.location != location {
        if state.location != catalog::LOCAL || matches!(place, Place::Local { .. }) {
            return Err(StoreError::Unavailable(format!(
                "the catalog says this store's segments are in {}, not {}; start with the same --object-store as before (moving segments out of object storage is not supported)",
                state.location,
                place.describe()
            )));
        }
        let files = catalog.files()?;
        place.upload_local(data_dir, &files)?;
        catalog.set_location(&location)?;
        let local = Place::new(data_dir, None);
        for file in &files {
            local.delete_relative(&file.path)?;
        }
        tracing::info!(
            segments = files.len(),
            to = %place.describe(),
            "moved the data directory's Parquet segments to object storage (once; the WAL stays local)"
        );
    }
    let removed = place.sweep_orphans(&catalog.known_paths()?)?;
    if removed > 0 {
        tracing::info!(
            files = removed,
            "removed files of flushes that were never committed"
        );
    }
    Ok(state.committed_wal_seq)
}

/// The store's two stages, each to run on a thread of its own: the writer (the WAL and the
/// active memtable, fed by the bounded command queue) and the flusher (frozen memtables to
/// Parquet, retention).
pub struct StoreStages {
    pub writer: StoreStage,
    pub flusher: StoreStage,
}

impl StoreStages {
    pub fn into_array(self) -> [StoreStage; 2] {
        [self.writer, self.flusher]
    }
}

/// One stage's loop, not yet running.
pub struct StoreStage {
    thread_name: &'static str,
    work: Box<dyn FnOnce() + Send>,
}

impl StoreStage {
    /// The name its thread should carry (`flowscope-wal`, `flowscope-flush`).
    pub fn thread_name(&self) -> &'static str {
        self.thread_name
    }

    /// Runs the loop on this thread until the store is closed.
    pub fn run(self) {
        (self.work)()
    }
}

/// A store whose committed segments are loaded and whose WAL is replayed, not yet started:
/// what [`SpanStore::recover`] returns.
pub struct Recovered {
    config: StoreConfig,
    catalog: catalog::Catalog,
    committed: u64,
    segments: Vec<Segment>,
    replayed: Vec<RecordBatch>,
    report: wal::ReplayReport,
    expired: usize,
    undecodable: usize,
}

impl Recovered {
    /// The batches replayed from the WAL, in the order they were logged.
    pub fn replayed(&self) -> &[RecordBatch] {
        &self.replayed
    }

    /// Reads the rows of the committed segments that started at or after `since_ns`, in the
    /// order the segments were loaded, as Parquet gives them back; `visit` returns `false` to
    /// stop.
    pub fn read_stored_since(
        &self,
        since_ns: i64,
        visit: &mut dyn FnMut(RecordBatch) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        for segment in self.segments.iter().filter(|s| s.max_start_ns >= since_ns) {
            if !read::read_segment(segment, None, since_ns, i64::MAX, visit)? {
                break;
            }
        }
        Ok(())
    }

    /// The second half of opening: the store, and its writer and flusher stages for the
    /// caller to run, each on a thread of its own (writes wait in the bounded command queue
    /// until they run). Every batch that becomes durable from now on is also sent to
    /// `on_commit`, in commit order. The send blocks when the listener falls behind, so a
    /// slow listener slows ingest instead of losing spans.
    pub fn stages(
        self,
        on_commit: Option<SyncSender<RecordBatch>>,
    ) -> Result<(Arc<SpanStore>, StoreStages), StoreError> {
        let (config, report) = (self.config, self.report);
        // Batches read from the WAL are slices of each record's one buffer, and Arrow counts
        // that whole buffer for every column: copying them into one compact batch frees the
        // record buffers and makes the ingest buffer count what memory really holds (it
        // counted many times that, refusing writes after every restart).
        let replayed = match concat_batches(&storage_schema(), &self.replayed) {
            Ok(batch) if batch.num_rows() > 0 => vec![batch],
            Ok(_) => Vec::new(),
            Err(_) => self.replayed,
        };
        let replayed_bytes: usize = replayed
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        tracing::info!(
            segments = self.segments.len(),
            wal_records = report.records,
            expired_spans = self.expired,
            undecodable = self.undecodable,
            cut_bytes = report.truncated_bytes,
            "span store opened"
        );
        let wal = Wal::create(
            &wal_dir(&config.data_dir),
            report.last_seq + 1,
            config.wal_sync,
        )?;
        let memory_rows: usize = replayed.iter().map(RecordBatch::num_rows).sum();
        // Replayed spans are in memory already: counted, never refused.
        config.memory.force_buffered(replayed_bytes);
        let shared = Arc::new(Shared {
            view: RwLock::new(View {
                memory: replayed,
                frozen: Vec::new(),
                segments: self.segments.into_iter().map(Arc::new).collect(),
            }),
            buffered_bytes: AtomicUsize::new(replayed_bytes),
            spans_written: AtomicU64::new(0),
            replayed_records: AtomicU64::new(report.records as u64),
            config,
        });
        let (command_tx, command_rx) = mpsc::sync_channel(COMMAND_QUEUE);
        let (flush_tx, flush_rx) = mpsc::sync_channel(FLUSH_QUEUE);
        let writer = Writer {
            on_commit,
            shared: shared.clone(),
            wal,
            flush_tx,
            active_rows: memory_rows,
            active_bytes: replayed_bytes,
            oldest: (memory_rows > 0).then(Instant::now),
            seal_retry_at: None,
        };
        let place = segment::Place::new(&shared.config.data_dir, shared.config.objects.as_ref());
        let flusher = Flusher {
            location: place.catalog_location(),
            place,
            catalog: self.catalog,
            committed: self.committed,
            shared: shared.clone(),
        };
        let liveness = &shared.config.liveness;
        let (writer_guard, flusher_guard) = (
            liveness.start(Stage::WalWriter),
            liveness.start(Stage::Flusher),
        );
        // Each stage holds a sender of `finished` until its loop ends (or unwinds, or the
        // stage is dropped unrun): `close` waits for the channel to disconnect.
        let (finished_tx, finished_rx) = mpsc::channel::<()>();
        let writer_finished = finished_tx.clone();
        let stages = StoreStages {
            writer: StoreStage {
                thread_name: "flowscope-wal",
                work: Box::new(move || {
                    let _finished = writer_finished;
                    writer.run(command_rx, writer_guard)
                }),
            },
            flusher: StoreStage {
                thread_name: "flowscope-flush",
                work: Box::new(move || {
                    let _finished = finished_tx;
                    flusher.run(flush_rx, flusher_guard)
                }),
            },
        };
        let store = Arc::new(SpanStore {
            shared,
            commands: Mutex::new(Some(command_tx)),
            finished: Mutex::new(Some(finished_rx)),
        });
        Ok((store, stages))
    }
}

impl SpanStore {
    fn sender(&self) -> Result<SyncSender<Command>, StoreError> {
        let guard = self
            .commands
            .lock()
            .map_err(|_| StoreError::Internal("store lock poisoned".into()))?;
        guard
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the server is shutting down".into()))
    }

    /// Makes `batch` durable and visible. Resolves once it is in the WAL (fsynced under
    /// `WalSync::Always`) and in the memtable; only then may the client be acknowledged.
    pub async fn write(&self, batch: RecordBatch) -> Result<(), StoreError> {
        self.append(batch, None).await
    }

    /// Like [`SpanStore::write`] for a batch decoded from the OTLP protobuf `request`: with a
    /// [`StoreConfig::request_decoder`] the WAL logs the request's bytes instead of encoding
    /// the batch.
    pub async fn write_request(
        &self,
        batch: RecordBatch,
        request: Bytes,
    ) -> Result<(), StoreError> {
        self.append(batch, Some(request)).await
    }

    async fn append(&self, batch: RecordBatch, request: Option<Bytes>) -> Result<(), StoreError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let bytes = batch.get_array_memory_size();
        if let Err(held) = self.shared.config.memory.take_buffered(bytes) {
            return Err(StoreError::Overloaded(
                format!("{} MiB of spans wait for Parquet flushes", held >> 20),
                Duration::from_secs(2),
            ));
        }
        self.shared
            .buffered_bytes
            .fetch_add(bytes, Ordering::SeqCst);
        let release = |error| {
            self.shared.release_buffered(bytes);
            error
        };
        let record = match request {
            Some(body) if self.shared.config.request_decoder.is_some() => Record {
                tag: REQUEST_TAG,
                body,
            },
            _ => Record {
                tag: &[],
                body: Bytes::from(encode_batch(&batch).map_err(release)?),
            },
        };
        // The WAL record is a second copy of the spans until it is written: it counts too.
        if self
            .shared
            .config
            .memory
            .take_buffered(record.len())
            .is_err()
        {
            return Err(release(StoreError::Overloaded(
                "the spans waiting for the write-ahead log fill the ingest buffer".into(),
                Duration::from_secs(1),
            )));
        }
        let payload_bytes = record.len();
        let release = |error| {
            self.shared.config.memory.release_buffered(payload_bytes);
            release(error)
        };
        let (ack, done) = oneshot::channel();
        let command = Command::Append(Append {
            record,
            batch,
            bytes,
            ack,
        });
        match self.sender().map_err(release)?.try_send(command) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(release(StoreError::Overloaded(
                    "the write-ahead log queue is full".into(),
                    Duration::from_secs(1),
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(release(StoreError::Unavailable(
                    "the server is shutting down".into(),
                )));
            }
        }
        done.await.map_err(|_| {
            StoreError::Unavailable("the store stopped before the spans were written".into())
        })?
    }

    /// Flushes everything in memory to Parquet and waits until it is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        // Blocking send: a flush request must not be refused because ingest is busy.
        let sender = self.sender()?;
        tokio::task::spawn_blocking(move || sender.send(Command::Flush { ack }))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .map_err(|_| StoreError::Unavailable("the server is shutting down".into()))?;
        done.await
            .map_err(|_| StoreError::Unavailable("the store stopped during the flush".into()))?
    }

    /// Flushes, stops the stages and waits for them to end.
    pub async fn close(&self) -> Result<(), StoreError> {
        let flushed = self.flush().await;
        if let Ok(mut guard) = self.commands.lock() {
            guard.take();
        }
        let finished = match self.finished.lock() {
            Ok(mut guard) => guard.take(),
            Err(_) => None,
        };
        tokio::task::spawn_blocking(move || {
            // Nothing is ever sent: `recv` returns once both stages have let go.
            if let Some(finished) = finished {
                while finished.recv().is_ok() {}
            }
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?;
        flushed
    }

    /// A consistent picture of everything stored, for one query.
    pub fn view(&self) -> View {
        read_view(&self.shared).clone()
    }

    pub fn stats(&self) -> StoreStats {
        let view = self.view();
        StoreStats {
            spans_written: self.shared.spans_written.load(Ordering::Relaxed),
            spans_in_memory: view
                .memory_batches()
                .iter()
                .map(|b| b.num_rows() as u64)
                .sum(),
            segments: view.segments.len() as u64,
            segment_bytes: view.segments.iter().map(|s| s.bytes).sum(),
            spans_in_segments: view.segments.iter().map(|s| s.rows).sum(),
            buffered_bytes: self.shared.buffered_bytes.load(Ordering::Relaxed) as u64,
            replayed_records: self.shared.replayed_records.load(Ordering::Relaxed),
            pending_flushes: view.frozen.len() as u64,
            cache: self
                .shared
                .config
                .objects
                .as_ref()
                .and_then(|objects| objects.cache())
                .map(|cache| cache.stats())
                .unwrap_or_default(),
            requests: self
                .shared
                .config
                .objects
                .as_ref()
                .map(|objects| objects.requests())
                .unwrap_or_default(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.config.data_dir
    }
}

impl Shared {
    /// Gives back buffer bytes, in this store's count and in the process's budget.
    fn release_buffered(&self, bytes: usize) {
        self.buffered_bytes.fetch_sub(bytes, Ordering::SeqCst);
        self.config.memory.release_buffered(bytes);
    }
}

impl Drop for Shared {
    /// A store that goes away (closed, or dropped in a test) gives its bytes back to the
    /// process's budget, which outlives it.
    fn drop(&mut self) {
        let held = self.buffered_bytes.load(Ordering::SeqCst);
        self.config.memory.release_buffered(held);
    }
}

fn read_view(shared: &Shared) -> std::sync::RwLockReadGuard<'_, View> {
    match shared.view.read() {
        Ok(view) => view,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn write_view(shared: &Shared) -> std::sync::RwLockWriteGuard<'_, View> {
    match shared.view.write() {
        Ok(view) => view,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The WAL stage: one thread owns the log and the active memtable.
struct Writer {
    shared: Arc<Shared>,
    wal: Wal,
    flush_tx: SyncSender<FlushJob>,
    on_commit: Option<SyncSender<RecordBatch>>,
    active_rows: usize,
    active_bytes: usize,
    oldest: Option<Instant>,
    /// After a failed seal, the next attempt waits until then.
    seal_retry_at: Option<Instant>,
}

/// How long the writer waits before sealing again after a failure (a full disk).
const SEAL_RETRY: Duration = Duration::from_millis(500);

impl Writer {
    /// Runs until every sender is gone; `_alive` is dropped with the thread, also by a panic.
    fn run(mut self, commands: Receiver<Command>, _alive: StageGuard) {
        let interval = self.shared.config.flush_interval;
        loop {
            let wait = self
                .oldest
                .map_or(interval, |t| interval.saturating_sub(t.elapsed()));
            let first = match commands.recv_timeout(wait.max(Duration::from_millis(10))) {
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut appends = Vec::new();
            let mut flush_acks = Vec::new();
            let mut next = first;
            while let Some(command) = next {
                match command {
                    Command::Append(append) => appends.push(append),
                    Command::Flush { ack } => flush_acks.push(ack),
                }
                next = if appends.len() < MAX_GROUP {
                    commands.try_recv().ok()
                } else {
                    None
                };
            }
            if !appends.is_empty() {
                self.commit_group(appends);
            }
            // A filling ingest buffer is a reason to flush too: otherwise a buffer smaller than
            // --flush-rows spans would refuse writes until the interval came round. Only when
            // this store's flusher is idle, though: a memtable frozen behind a flush still
            // running frees nothing sooner, and freezing one every few MiB made hundreds of
            // small files whose overhead slowed the flusher further (144 files for 2M spans,
            // against 16 at --flush-rows).
            let frozen = read_view(&self.shared).frozen.len();
            let pressure = frozen == 0 && self.shared.config.memory.should_flush(self.active_bytes);
            let due = (self.active_rows >= self.shared.config.flush_rows
                || self.oldest.is_some_and(|t| t.elapsed() >= interval)
                || pressure)
                && frozen < FLUSH_QUEUE
                && self.seal_retry_at.is_none_or(|at| Instant::now() >= at);
            if due || !flush_acks.is_empty() {
                self.freeze(flush_acks);
            }
        }
    }

    fn commit_group(&mut self, mut appends: Vec<Append>) {
        let mut payload_bytes = 0;
        for append in &mut appends {
            let record = std::mem::take(&mut append.record);
            payload_bytes += record.len();
            self.wal.append_tagged(record.tag, record.body);
        }
        let committed = self.wal.commit();
        // Written or refused, the WAL records are no longer held: give their bytes back.
        self.shared.config.memory.release_buffered(payload_bytes);
        if let Err(error) = committed {
            self.shared.config.liveness.error(Stage::WalWriter);
            tracing::error!(%error, "wal: group commit failed; refusing the group");
            for append in appends {
                self.shared.release_buffered(append.bytes);
                let _ = append.ack.send(Err(StoreError::Unavailable(format!(
                    "cannot write the write-ahead log: {error}"
                ))));
            }
            return;
        }
        let batches: Vec<RecordBatch> = appends.iter().map(|a| a.batch.clone()).collect();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        // Small requests are concatenated, one batch per group, so the memtable does not
        // fragment into thousands of tiny batches; requests of exporter size (512 spans by
        // default) are kept as they are: copying them again cost the writer thread a fifth
        // of its time. If concatenation fails the batches are kept as they are.
        let merged = if rows < COMPACT_BELOW_ROWS * batches.len() {
            concat_batches(&storage_schema(), &batches)
                .map(|b| vec![b])
                .unwrap_or(batches)
        } else {
            batches
        };
        if let Some(listener) = &self.on_commit {
            for batch in &merged {
                let _ = listener.send(batch.clone());
            }
        }
        write_view(&self.shared).memory.extend(merged);
        self.active_rows += rows;
        self.active_bytes += appends.iter().map(|a| a.bytes).sum::<usize>();
        self.oldest.get_or_insert_with(Instant::now);
        self.shared
            .spans_written
            .fetch_add(rows as u64, Ordering::Relaxed);
        for append in appends {
            let _ = append.ack.send(Ok(()));
        }
    }

    /// Seals the WAL segment and hands the memtable to the flusher.
    fn freeze(&mut self, acks: Vec<oneshot::Sender<Result<(), StoreError>>>) {
        if self.active_rows == 0 {
            let _ = self.flush_tx.send(FlushJob { frozen: None, acks });
            return;
        }
        let sealed = match self.wal.rotate() {
            Ok(sealed) => sealed,
            Err(error) => {
                // A full disk: try again shortly, not on every write that comes in.
                self.seal_retry_at = Some(Instant::now() + SEAL_RETRY);
                self.shared.config.liveness.error(Stage::WalWriter);
                tracing::error!(%error, retry_in = ?SEAL_RETRY, "wal: cannot seal the segment; will retry");
                for ack in acks {
                    let _ = ack.send(Err(StoreError::Unavailable(format!(
                        "cannot seal the write-ahead log: {error}"
                    ))));
                }
                return;
            }
        };
        self.seal_retry_at = None;
        let frozen = {
            let mut view = write_view(&self.shared);
            let frozen = Arc::new(Frozen {
                wal_seq: sealed,
                batches: std::mem::take(&mut view.memory),
                bytes: self.active_bytes,
            });
            view.frozen.push(frozen.clone());
            frozen
        };
        self.active_rows = 0;
        self.active_bytes = 0;
        self.oldest = None;
        let _ = self.flush_tx.send(FlushJob {
            frozen: Some(frozen),
            acks,
        });
    }
}

/// The Parquet stage: writes frozen memtables, commits them, deletes their WAL, applies
/// retention.
struct Flusher {
    shared: Arc<Shared>,
    place: segment::Place,
    catalog: catalog::Catalog,
    /// The place as the catalog names it.
    location: String,
    /// The WAL position of the last commit: the next flush holds the records past it.
    committed: u64,
}

const RETENTION_CHECK: Duration = Duration::from_secs(60);
/// The longest wait between attempts at a failed Parquet flush (a full disk).
const MAX_FLUSH_BACKOFF: Duration = Duration::from_secs(2);
/// How long a file dropped from the catalog (retention, compaction) is kept before it is
/// deleted: longer than any query that may have started before may still read it.
pub const DELETE_GRACE: Duration = Duration::from_secs(10 * 60);
/// How often the flusher looks for small files to merge, by default.
pub const COMPACT_EVERY: Duration = Duration::from_secs(5 * 60);
/// Fewer small files than this in an hour are left as they are.
const COMPACT_MIN_FILES: usize = 4;
/// Merges a compaction round does at most.
const COMPACT_GROUPS: usize = 4;

/// The groups of small files a compaction round merges: files of an hour that ended before
/// `settled_before`, each under a quarter of `max_rows` rows, in WAL order, cut into groups of
/// at most `max_rows` rows; groups of fewer than [`COMPACT_MIN_FILES`] are left, and at most
/// [`COMPACT_GROUPS`] are returned. `facts` gives a file's (rows, first start, WAL sequence).
pub(crate) fn compaction_groups<T: Clone>(
    files: &[T],
    facts: impl Fn(&T) -> (u64, i64, u64),
    max_rows: u64,
    settled_before: i64,
) -> Vec<Vec<T>> {
    let mut by_hour: std::collections::BTreeMap<i64, Vec<&T>> = Default::default();
    for file in files {
        let (rows, start, _) = facts(file);
        let hour = start.div_euclid(segment::NANOS_PER_HOUR);
        let ends = (hour + 1).saturating_mul(segment::NANOS_PER_HOUR);
        if rows < max_rows / 4 && ends < settled_before {
            by_hour.entry(hour).or_default().push(file);
        }
    }
    let mut groups = Vec::new();
    for (_, mut small) in by_hour {
        small.sort_by_key(|file| facts(file).2);
        let mut group: Vec<T> = Vec::new();
        let mut rows = 0;
        for file in small {
            let file_rows = facts(file).0;
            if rows + file_rows > max_rows && !group.is_empty() {
                groups.push(std::mem::take(&mut group));
                rows = 0;
            }
            rows += file_rows;
            group.push(file.clone());
        }
        groups.push(group);
    }
    groups.retain(|group| group.len() >= COMPACT_MIN_FILES);
    groups.truncate(COMPACT_GROUPS);
    groups
}

impl Flusher {
    /// Runs until the writer is gone; `_alive` is dropped with the thread, also by a panic.
    fn run(mut self, jobs: Receiver<FlushJob>, _alive: StageGuard) {
        let mut last_retention = Instant::now() - RETENTION_CHECK;
        let compact_every = self
            .shared
            .config
            .compact_every
            .max(Duration::from_millis(10));
        let mut last_compaction = Instant::now();
        loop {
            if last_retention.elapsed() >= RETENTION_CHECK {
                self.apply_retention();
                last_retention = Instant::now();
            }
            if last_compaction.elapsed() >= compact_every {
                if self.shared.config.compacted_elsewhere {
                    self.refresh_from_catalog();
                } else {
                    self.compact();
                }
                last_compaction = Instant::now();
            }
            match jobs.recv_timeout(RETENTION_CHECK.min(compact_every)) {
                Ok(job) => self.flush(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    fn flush(&mut self, job: FlushJob) {
        if let Some(frozen) = job.frozen {
            self.write_until_done(&frozen);
        }
        for ack in job.acks {
            let _ = ack.send(Ok(()));
        }
    }

    fn write_until_done(&mut self, frozen: &Arc<Frozen>) {
        let data_dir = &self.shared.config.data_dir;
        let mut backoff = Duration::from_millis(100);
        let segments = loop {
            match segment::write_flush(&self.place, &frozen.batches, frozen.wal_seq) {
                Ok(segments) => break segments,
                Err(error) => {
                    // The spans stay in memory and in the WAL; ingest is refused once the
                    // buffer fills, and resumes when the disk accepts writes again.
                    self.shared.config.liveness.error(Stage::Flusher);
                    tracing::error!(%error, retry_in = ?backoff, "flush to Parquet failed; retrying");
                    std::thread::sleep(backoff);
                    // Short enough that ingest resumes within seconds of space returning.
                    backoff = (backoff * 2).min(MAX_FLUSH_BACKOFF);
                }
            }
        };
        crash_point("after-upload");
        // The commit point: the files' rows and the new WAL position, in one transaction.
        // Until it succeeds the files are orphans that the next start removes.
        let files: Vec<_> = segments
            .iter()
            .map(|segment| self.place.catalog_file(segment, self.committed + 1))
            .collect();
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = self.catalog.commit(&self.location, &files, frozen.wal_seq) {
            self.shared.config.liveness.error(Stage::Flusher);
            tracing::error!(%error, retry_in = ?backoff, "committing a flush to the catalog failed; retrying");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_FLUSH_BACKOFF);
        }
        self.committed = frozen.wal_seq;
        crash_point("after-commit");
        {
            let mut view = write_view(&self.shared);
            view.frozen.retain(|f| !Arc::ptr_eq(f, frozen));
            view.segments.extend(segments.into_iter().map(Arc::new));
        }
        self.shared.release_buffered(frozen.bytes);
        if let Err(error) = wal::remove_through(&wal_dir(data_dir), frozen.wal_seq) {
            self.shared.config.liveness.error(Stage::Flusher);
            tracing::warn!(%error, "cannot delete flushed WAL segments; they are skipped on replay");
        }
    }

    /// Merges small committed files of one hour into one (compaction): an hour that ended a
    /// while ago (two flush intervals: late spans still come to it, rarely) with at least
    /// [`COMPACT_MIN_FILES`] files under a quarter of `--flush-rows` rows each, merged in
    /// WAL order into groups of at most `--flush-rows` rows (what a flush holds in memory:
    /// the bound of this one). The new file is written or uploaded, then swapped in by one
    /// catalog transaction (its row in, the old rows dropped); the old files are deleted
    /// after [`DELETE_GRACE`], as retention's are. At most [`COMPACT_GROUPS`] groups a round,
    /// so a flush never waits long behind it. A failure is logged and tried next round.
    fn compact(&mut self) {
        let shared = self.shared.clone();
        let config = &shared.config;
        let max_rows = config.flush_rows.max(1) as u64;
        let settled_before = flowscope_base::clock::now_ns().saturating_sub(
            i64::try_from((config.flush_interval * 2).as_nanos()).unwrap_or(i64::MAX),
        );
        let groups: Vec<Vec<Arc<Segment>>> = {
            let view = read_view(&self.shared).clone();
            compaction_groups(
                &view.segments,
                |segment| (segment.rows, segment.min_start_ns, segment.wal_seq),
                max_rows,
                settled_before,
            )
        };
        for group in groups {
            let started = Instant::now();
            match self.merge(&group) {
                Ok(merged) => tracing::info!(
                    files = group.len(),
                    into = %merged.location,
                    rows = merged.rows,
                    took_ms = started.elapsed().as_millis() as u64,
                    "compaction: merged small files of one hour; the old ones are deleted after the grace period"
                ),
                Err(error) => {
                    config.liveness.error(Stage::Flusher);
                    tracing::warn!(%error, files = group.len(), "compaction failed; trying again later");
                }
            }
        }
    }

    /// Merges `group` (files of one hour) into one file and swaps it in.
    fn merge(&self, group: &[Arc<Segment>]) -> Result<Segment, StoreError> {
        let mut batches = Vec::new();
        for segment in group {
            read::read_segment(segment, None, i64::MIN, i64::MAX, &mut |batch| {
                batches.push(batch);
                Ok(true)
            })?;
        }
        // A file merged before holds records from further back than its own sequence.
        let wal_min = group
            .iter()
            .map(|s| segment::compacted_range(&s.location).map_or(s.wal_seq, |(min, _)| min))
            .min()
            .unwrap_or(0);
        let wal_max = group.iter().map(|s| s.wal_seq).max().unwrap_or(0);
        let mut written = segment::write_compacted(&self.place, &batches, wal_max, wal_min)?;
        drop(batches);
        let Some(merged) = written.pop().filter(|_| written.is_empty()) else {
            return Err(StoreError::Internal(
                "compaction of one hour wrote files of several hours".into(),
            ));
        };
        let old: Vec<String> = group
            .iter()
            .map(|segment| self.place.relative(&segment.location))
            .collect();
        if !self
            .catalog
            .swap(&[self.place.catalog_file(&merged, wal_min)], &old)?
        {
            // Retention dropped one of them meanwhile: the merged file is not wanted.
            let _ = self.place.delete(&merged);
            return Err(StoreError::Internal(
                "a file to merge was dropped meanwhile; the merge is discarded".into(),
            ));
        }
        let merged = Arc::new(merged);
        {
            let mut view = write_view(&self.shared);
            view.segments
                .retain(|segment| !group.iter().any(|old| Arc::ptr_eq(old, segment)));
            view.segments.push(merged.clone());
        }
        Ok((*merged).clone())
    }

    /// Takes in the catalog's view of this store's files when a cluster's compactor merges
    /// them: files it swapped in join the view, files it swapped out leave it (their
    /// objects stay for [`DELETE_GRACE`], then [`Flusher::delete_dropped`] deletes them).
    /// Flushes, retention and this run on this thread, so the view never misses a flush.
    fn refresh_from_catalog(&mut self) {
        let files = match self.catalog.files() {
            Ok(files) => files,
            Err(error) => {
                tracing::warn!(%error, "cannot read the catalog to see the compactor's merges; trying again later");
                return;
            }
        };
        let live: HashSet<&str> = files.iter().map(|file| file.path.as_str()).collect();
        let mut view = write_view(&self.shared);
        let before = view.segments.len();
        view.segments
            .retain(|segment| live.contains(self.place.relative(&segment.location).as_str()));
        let kept: HashSet<String> = view
            .segments
            .iter()
            .map(|segment| self.place.relative(&segment.location))
            .collect();
        let mut added = 0;
        for file in files {
            if !kept.contains(&file.path) {
                view.segments.push(Arc::new(self.place.segment(file)));
                added += 1;
            }
        }
        let dropped = before + added - view.segments.len();
        if added > 0 || dropped > 0 {
            tracing::info!(
                added,
                dropped,
                "took in the compactor's merges of this store's files"
            );
        }
    }

    fn apply_retention(&self) {
        let cutoff = retention_cutoff_ns(SystemTime::now(), self.shared.config.retention);
        let expired: Vec<Arc<Segment>> = {
            let mut view = write_view(&self.shared);
            let (old, keep): (Vec<_>, Vec<_>) = view
                .segments
                .drain(..)
                .partition(|s| s.max_start_ns < cutoff);
            view.segments = keep;
            old
        };
        if !expired.is_empty() {
            let paths: Vec<String> = expired
                .iter()
                .map(|segment| self.place.relative(&segment.location))
                .collect();
            match self.catalog.mark_deleted(&paths) {
                Ok(()) => {
                    for segment in &expired {
                        tracing::info!(location = %segment.location, rows = segment.rows, "retention: dropped segment; its file is deleted after the grace period");
                    }
                }
                Err(error) => {
                    // Still in the catalog: they come back on the next start and are
                    // dropped again then.
                    self.shared.config.liveness.error(Stage::Flusher);
                    tracing::warn!(%error, "retention: cannot drop segments from the catalog");
                }
            }
        }
        self.delete_dropped();
    }

    /// Deletes the files dropped from the catalog longer than [`DELETE_GRACE`] ago, then
    /// their rows.
    fn delete_dropped(&self) {
        let before = flowscope_base::clock::now_ns()
            .saturating_sub(DELETE_GRACE.as_nanos().min(i64::MAX as u128) as i64);
        let dropped = match self.catalog.dropped_before(before) {
            Ok(dropped) => dropped,
            Err(error) => {
                tracing::warn!(%error, "retention: cannot read the dropped files from the catalog");
                return;
            }
        };
        for path in dropped {
            let deleted = self
                .place
                .delete_relative(&path)
                .and_then(|()| self.catalog.forget(&path));
            match deleted {
                Ok(()) => tracing::info!(%path, "retention: deleted a dropped segment"),
                Err(error) => {
                    self.shared.config.liveness.error(Stage::Flusher);
                    tracing::warn!(%error, %path, "retention: cannot delete a dropped segment");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::sample_batch;

    /// A real WAL record, and its single-byte corruptions (XOR 0xe7, as in the input the
    /// `wal_replay` fuzz target found); replay hands such a record to the decoder whenever
    /// the checksum was taken after the change.
    fn record_and_corruptions() -> (Vec<u8>, Vec<Vec<u8>>) {
        let payload = encode_batch(&sample_batch(1, 0)).expect("encode");
        let corruptions = (0..payload.len())
            .map(|at| {
                let mut bad = payload.clone();
                bad[at] ^= 0xe7;
                bad
            })
            .collect();
        (payload, corruptions)
    }

    #[test]
    fn no_single_byte_corruption_of_a_record_makes_decoding_panic_or_abort() {
        // Before the fix some of these panicked in arrow's IPC reader and one made it
        // allocate 992 GB, which aborts the process (and so this test).
        let (_, corruptions) = record_and_corruptions();
        let refused = corruptions
            .iter()
            .filter(|bad| decode_batches(bad).is_err())
            .count();
        assert!(refused > 0);
    }

    #[test]
    fn a_record_claiming_a_body_longer_than_itself_is_refused_before_arrow_reads_it() {
        let (payload, corruptions) = record_and_corruptions();
        assert!(check_ipc_lengths(&payload).is_ok());
        let too_long: Vec<&Vec<u8>> = corruptions
            .iter()
            .filter(|bad| check_ipc_lengths(bad).is_err())
            .collect();
        assert!(!too_long.is_empty(), "no corruption changes a length");
        for bad in too_long {
            assert!(matches!(decode_batches(bad), Err(StoreError::Corrupt(_))));
        }
    }

    /// Corruptions whose lengths are sound but which arrow's reader panics on.
    fn corruptions_arrow_panics_on() -> (Vec<u8>, Vec<Vec<u8>>) {
        let (payload, corruptions) = record_and_corruptions();
        let panicking = corruptions
            .into_iter()
            .filter(|bad| check_ipc_lengths(bad).is_ok())
            .filter(|bad| std::panic::catch_unwind(|| read_batches(bad)).is_err())
            .collect();
        (payload, panicking)
    }

    #[test]
    fn a_record_arrow_panics_on_is_refused_as_corrupt_instead_of_panicking() {
        let (_, panicking) = corruptions_arrow_panics_on();
        assert!(
            !panicking.is_empty(),
            "no corruption makes arrow panic any more; find another input for this test"
        );
        for bad in &panicking {
            assert!(matches!(decode_batches(bad), Err(StoreError::Corrupt(_))));
        }
    }

    #[test]
    fn the_store_opens_past_a_record_arrow_panics_on_and_keeps_the_good_one() {
        let (good, panicking) = corruptions_arrow_panics_on();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Wal::create(&wal_dir(dir.path()), 1, WalSync::Never).expect("create");
        log.append(&good);
        log.append(&panicking[0]);
        log.commit().expect("commit");
        drop(log);
        let mut config = StoreConfig::new(dir.path());
        config.wal_sync = WalSync::Never;
        // The sample spans are from 2018: a retention that keeps them through replay.
        config.retention = Duration::from_secs(100 * 365 * 86_400);
        let store = SpanStore::open(config).expect("the store opens");
        let rows: usize = store
            .view()
            .memory_batches()
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, 1);
    }

    /// The flush queue is bounded: with the flusher stopped and every write due for a
    /// flush, the writer freezes `FLUSH_QUEUE` memtables, then keeps the rest in its active
    /// memtable and goes on acknowledging (the ingest buffer, not a blocked writer, is what
    /// refuses writes when the flusher cannot keep up).
    #[test]
    fn the_writer_freezes_at_most_the_flush_queue_and_goes_on_acknowledging() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = StoreConfig::new(dir.path().to_path_buf());
        config.flush_rows = 1;
        let (store, stages) = SpanStore::recover(config)
            .expect("recover")
            .stages(None)
            .expect("stages");
        let [writer, flusher] = stages.into_array();
        let writer = std::thread::spawn(move || writer.run());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let writes = FLUSH_QUEUE as u8 * 3;
        for seed in 0..writes {
            let write = store.write(sample_batch(1, seed));
            runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), write).await })
                .expect("the writer never waits for the flusher")
                .expect("acknowledged while the flush queue is full");
        }
        // The last write is frozen (or not) just after its acknowledgement.
        let mut waited = 0;
        while store.view().frozen.len() < FLUSH_QUEUE && waited < 200 {
            std::thread::sleep(Duration::from_millis(10));
            waited += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
        let view = store.view();
        assert_eq!(view.frozen.len(), FLUSH_QUEUE);
        assert_eq!(view.memory_batches().len(), usize::from(writes));
        assert_eq!(store.stats().spans_written, u64::from(writes));
        // Without a flusher nothing reaches Parquet; the writer ends with the store.
        drop((store, flusher));
        writer
            .join()
            .expect("the writer ends when the store is dropped");
    }
}

//! Parquet segments: plain zstd Parquet files partitioned by the hour of `start_time`, each
//! carrying in its footer the facts the store needs to prune and to recover.
//!
//! Layout: `<data>/spans/date=YYYY-MM-DD/hour=HH/part-<wal seq>.parquet`. A flush is
//! committed when `<data>/spans/_committed` names its WAL sequence number; files of a flush
//! that never got there are deleted on start and their spans come back from the WAL.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{SortOptions, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::TimestampNanosecondType;
use flowscope_model::{columns, storage_schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnPath;

use crate::error::StoreError;
use crate::wal::sync_dir;

const KEY_WAL_SEQ: &str = "flowscope.wal_seq";
const KEY_MIN_START: &str = "flowscope.min_start_ns";
const KEY_MAX_START: &str = "flowscope.max_start_ns";
const KEY_SERVICES: &str = "flowscope.services";
const COMMIT_FILE: &str = "_committed";
/// A segment lists its service names for pruning only up to this many.
const MAX_LISTED_SERVICES: usize = 256;
const ROW_GROUP_ROWS: usize = 128 * 1024;
const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// One Parquet file and what the store knows about it without opening it.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub path: PathBuf,
    pub bytes: u64,
    pub rows: u64,
    pub min_start_ns: i64,
    pub max_start_ns: i64,
    /// Service names in the file; `None` when there were too many to list.
    pub services: Option<BTreeSet<String>>,
    pub wal_seq: u64,
}

impl Segment {
    /// Whether the file may hold spans starting in `[from, to]` (inclusive bounds, ns).
    pub fn overlaps(&self, from: Option<i64>, to: Option<i64>) -> bool {
        from.is_none_or(|from| self.max_start_ns >= from)
            && to.is_none_or(|to| self.min_start_ns <= to)
    }

    /// Whether the file may hold spans of any of `services`.
    pub fn may_contain_service(&self, services: &[String]) -> bool {
        match &self.services {
            None => true,
            Some(listed) => services.iter().any(|s| listed.contains(s)),
        }
    }
}

pub fn spans_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("spans")
}

/// The WAL sequence number of the last committed flush (0 before the first).
pub fn read_committed(spans_dir: &Path) -> Result<u64, StoreError> {
    match fs::read_to_string(spans_dir.join(COMMIT_FILE)) {
        Ok(text) => text.trim().parse().map_err(|_| {
            StoreError::Corrupt(format!(
                "{} does not hold a number; restore it or delete the data directory",
                spans_dir.join(COMMIT_FILE).display()
            ))
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(error) => Err(error.into()),
    }
}

fn write_committed(spans_dir: &Path, wal_seq: u64) -> io::Result<()> {
    let tmp = spans_dir.join(format!("{COMMIT_FILE}.tmp"));
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(wal_seq.to_string().as_bytes())?;
        file.sync_all()
    });
    if let Err(error) = written {
        // Never rename a short write into place: the commit marker would not parse.
        let _ = fs::remove_file(&tmp);
        return Err(error);
    }
    fs::rename(&tmp, spans_dir.join(COMMIT_FILE))?;
    sync_dir(spans_dir)
}

/// Finds every committed segment under `spans_dir`, deleting leftovers of an interrupted
/// flush (temporary files, files of an uncommitted flush).
pub fn load_segments(spans_dir: &Path, committed: u64) -> Result<Vec<Segment>, StoreError> {
    fs::create_dir_all(spans_dir)?;
    let mut files = Vec::new();
    collect_files(spans_dir, &mut files)?;
    let mut segments = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".tmp") {
            fs::remove_file(&path)?;
            continue;
        }
        if !name.ends_with(".parquet") {
            continue;
        }
        let segment = read_segment_meta(&path)?;
        if segment.wal_seq > committed {
            tracing::info!(path = %path.display(), "removing a segment of an interrupted flush; its spans are replayed from the WAL");
            fs::remove_file(&path)?;
            continue;
        }
        segments.push(segment);
    }
    segments.sort_by_key(|s| (s.min_start_ns, s.wal_seq));
    Ok(segments)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn read_segment_meta(path: &Path) -> Result<Segment, StoreError> {
    let corrupt = |what: &str| {
        StoreError::Corrupt(format!(
            "segment {} {what}; move it out of the data directory to start without it",
            path.display()
        ))
    };
    let file = File::open(path)?;
    let bytes = file.metadata()?.len();
    let reader = SerializedFileReader::new(file)
        .map_err(|e| corrupt(&format!("is not readable Parquet ({e})")))?;
    let meta = reader.metadata().file_metadata();
    let kv = meta.key_value_metadata().cloned().unwrap_or_default();
    let get = |key: &str| {
        kv.iter()
            .find(|k| k.key == key)
            .and_then(|k| k.value.clone())
    };
    let number = |key: &str| {
        get(key)
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| corrupt(&format!("lacks {key}")))
    };
    let services =
        get(KEY_SERVICES).and_then(|v| serde_json::from_str::<BTreeSet<String>>(&v).ok());
    Ok(Segment {
        path: path.to_path_buf(),
        bytes,
        rows: meta.num_rows().max(0) as u64,
        min_start_ns: number(KEY_MIN_START)?,
        max_start_ns: number(KEY_MAX_START)?,
        services,
        wal_seq: number(KEY_WAL_SEQ)? as u64,
    })
}

/// Columns queries filter on: page statistics (the page index) let a scan skip pages.
const PAGE_STATISTICS: [&str; 6] = [
    columns::START_TIME,
    columns::SERVICE_NAME,
    columns::TRACE_ID,
    columns::KIND,
    columns::STATUS_CODE,
    columns::NAME,
];
/// Columns of (nearly) unique values: a dictionary never pays for itself, and building one
/// before falling back costs the flusher CPU.
const NO_DICTIONARY: [&str; 6] = [
    columns::TRACE_ID,
    columns::SPAN_ID,
    columns::PARENT_SPAN_ID,
    columns::START_TIME,
    columns::END_TIME,
    columns::DURATION_NS,
];

fn writer_properties(metadata: Vec<KeyValue>, rows: usize) -> WriterProperties {
    let trace_id = ColumnPath::from(columns::TRACE_ID);
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Row-group statistics everywhere; page statistics only where queries filter.
        .set_statistics_enabled(EnabledStatistics::Chunk);
    for column in PAGE_STATISTICS {
        builder = builder.set_column_statistics_enabled(column.into(), EnabledStatistics::Page);
    }
    for column in NO_DICTIONARY {
        builder = builder.set_column_dictionary_enabled(column.into(), false);
    }
    builder
        // A bloom filter on trace_id makes `WHERE trace_id = '…'` skip row groups without it.
        .set_column_bloom_filter_enabled(trace_id.clone(), true)
        .set_column_bloom_filter_max_ndv(trace_id.clone(), rows.clamp(1, ROW_GROUP_ROWS) as u64)
        .set_column_bloom_filter_fpp(trace_id, 0.01)
        .set_key_value_metadata(Some(metadata))
        .build()
}

fn hour_partition(start_ns: i64) -> PathBuf {
    let hour_start = start_ns.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR;
    match arrow::temporal_conversions::timestamp_ns_to_datetime(hour_start) {
        Some(time) => PathBuf::from(format!("date={}", time.format("%Y-%m-%d")))
            .join(format!("hour={}", time.format("%H"))),
        None => PathBuf::from("date=invalid"),
    }
}

/// Writes `batches` (all covered by WAL segments up to `wal_seq`) as one Parquet file per
/// hour of `start_time`, sorted by `start_time`, then commits the flush. Returns the new
/// segments. Nothing is visible as committed until every file is durable.
pub fn write_flush(
    spans_dir: &Path,
    batches: &[RecordBatch],
    wal_seq: u64,
) -> Result<Vec<Segment>, StoreError> {
    let schema = storage_schema();
    let all = concat_batches(&schema, batches)?;
    let mut segments = Vec::new();
    if all.num_rows() > 0 {
        let sorted = sort_by_start(&all)?;
        for part in split_by_hour(&sorted)? {
            segments.push(write_segment(spans_dir, &part, wal_seq)?);
        }
    }
    write_committed(spans_dir, wal_seq)?;
    Ok(segments)
}

fn start_times(
    batch: &RecordBatch,
) -> Result<&arrow::array::PrimitiveArray<TimestampNanosecondType>, StoreError> {
    batch
        .column_by_name(columns::START_TIME)
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or_else(|| StoreError::Internal("span batch has no start_time column".into()))
}

fn sort_by_start(batch: &RecordBatch) -> Result<RecordBatch, StoreError> {
    let start: Arc<dyn Array> = Arc::new(start_times(batch)?.clone());
    let sort = arrow::compute::SortColumn {
        values: start,
        options: Some(SortOptions::default()),
    };
    let indices = lexsort_to_indices(&[sort], None)?;
    Ok(take_record_batch(batch, &indices)?)
}

/// Splits a batch sorted by start_time into runs of the same hour.
fn split_by_hour(sorted: &RecordBatch) -> Result<Vec<RecordBatch>, StoreError> {
    let start = start_times(sorted)?;
    let mut parts = Vec::new();
    let mut run_start = 0;
    for row in 1..=start.len() {
        let boundary = row == start.len()
            || start.value(row).div_euclid(NANOS_PER_HOUR)
                != start.value(run_start).div_euclid(NANOS_PER_HOUR);
        if boundary {
            parts.push(sorted.slice(run_start, row - run_start));
            run_start = row;
        }
    }
    Ok(parts)
}

fn write_segment(
    spans_dir: &Path,
    part: &RecordBatch,
    wal_seq: u64,
) -> Result<Segment, StoreError> {
    let start = start_times(part)?;
    let (min_start_ns, max_start_ns) = (start.value(0), start.value(start.len() - 1));
    let services = distinct_services(part);
    let mut metadata = vec![
        KeyValue::new(KEY_WAL_SEQ.into(), wal_seq.to_string()),
        KeyValue::new(KEY_MIN_START.into(), min_start_ns.to_string()),
        KeyValue::new(KEY_MAX_START.into(), max_start_ns.to_string()),
    ];
    if let Some(services) = &services {
        metadata.push(KeyValue::new(
            KEY_SERVICES.into(),
            serde_json::to_string(services).unwrap_or_default(),
        ));
    }
    let dir = spans_dir.join(hour_partition(min_start_ns));
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("part-{wal_seq:020}.parquet"));
    let tmp = path.with_extension("parquet.tmp");
    let bytes = match write_parquet(&tmp, part, metadata) {
        Ok(bytes) => bytes,
        Err(error) => {
            // A half-written file (the disk filled up) is never renamed into place; removing
            // it gives its space back for the retry.
            let _ = fs::remove_file(&tmp);
            return Err(error);
        }
    };
    fs::rename(&tmp, &path)?;
    sync_dir(&dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(Segment {
        path,
        bytes,
        rows: part.num_rows() as u64,
        min_start_ns,
        max_start_ns,
        services,
        wal_seq,
    })
}

/// Writes `part` as a complete, fsynced Parquet file at `tmp`; returns its size.
fn write_parquet(
    tmp: &Path,
    part: &RecordBatch,
    metadata: Vec<KeyValue>,
) -> Result<u64, StoreError> {
    let file = File::create(tmp)?;
    let mut writer = ArrowWriter::try_new(
        file,
        part.schema(),
        Some(writer_properties(metadata, part.num_rows())),
    )?;
    writer.write(part)?;
    let file = writer.into_inner()?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

fn distinct_services(batch: &RecordBatch) -> Option<BTreeSet<String>> {
    let column = batch
        .column_by_name(columns::SERVICE_NAME)?
        .as_string_opt::<i32>()?;
    let mut services = BTreeSet::new();
    for name in column.iter().flatten() {
        if services.len() == MAX_LISTED_SERVICES && !services.contains(name) {
            return None;
        }
        services.insert(name.to_string());
    }
    Some(services)
}

/// Deletes a segment file and the hour and date directories it leaves empty.
pub fn delete_segment(segment: &Segment) -> io::Result<()> {
    fs::remove_file(&segment.path)?;
    let mut dir = segment.path.parent();
    for _ in 0..2 {
        let Some(current) = dir else { break };
        if fs::remove_dir(current).is_err() {
            break; // not empty
        }
        dir = current.parent();
    }
    Ok(())
}

//! Parquet segments: plain zstd Parquet files partitioned by the hour of `start_time`, each
//! carrying in its footer the facts the store needs to prune and to recover.
//!
//! Layout: `<data>/spans/date=YYYY-MM-DD/hour=HH/part-<wal seq>.parquet`. A flush is
//! committed when the catalog ([`super::catalog`]) holds its files' rows and its WAL
//! sequence number; files no row names were never committed and are deleted on start, their
//! spans coming back from the WAL. Before the catalog, `<data>/spans/_committed` named the
//! last committed flush: a store that finds one records its files in the catalog once.
//!
//! With object storage ([`Place::Remote`]) the same layout lives under the bucket's prefix
//! (`<prefix>/spans/…`); each file is written in a local staging directory and uploaded
//! before the catalog names it.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use arrow::array::{Array, AsArray, PrimitiveArray, RecordBatch, StringArray};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::TimestampNanosecondType;
use flowscope_model::{columns, storage_schema};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnPath;

use object_store::path::Path as ObjectPath;

use crate::error::StoreError;
use crate::store::catalog::{self, CatalogFile};
use crate::store::objects::ObjectStorage;
use crate::store::wal::sync_dir;

const KEY_WAL_SEQ: &str = "flowscope.wal_seq";
const KEY_MIN_START: &str = "flowscope.min_start_ns";
const KEY_MAX_START: &str = "flowscope.max_start_ns";
const KEY_SERVICES: &str = "flowscope.services";
const COMMIT_FILE: &str = "_committed";
/// A segment lists its service names for pruning only up to this many.
const MAX_LISTED_SERVICES: usize = 256;
const ROW_GROUP_ROWS: usize = 128 * 1024;
pub(crate) const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// Where a segment's bytes are.
#[derive(Debug, Clone)]
pub enum Location {
    /// A file on the local disk.
    File(PathBuf),
    /// An object in the store's object storage.
    Object(ObjectStorage, ObjectPath),
}

impl PartialEq for Location {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::File(a), Self::File(b)) => a == b,
            (Self::Object(s, a), Self::Object(t, b)) => a == b && s.describe() == t.describe(),
            _ => false,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Object(storage, path) => {
                write!(f, "{}/{path}", storage.url().as_str().trim_end_matches('/'))
            }
        }
    }
}

/// One Parquet file and what the store knows about it without opening it.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub location: Location,
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

/// Where one store keeps its committed segments and the commit marker.
#[derive(Debug, Clone)]
pub enum Place {
    /// `<data>/spans/…` on the local disk: the default.
    Local { spans_dir: PathBuf },
    /// `<prefix>/spans/…` in object storage; each file is written in `staging` (on the
    /// local disk) and uploaded whole.
    Remote {
        objects: ObjectStorage,
        staging: PathBuf,
    },
}

/// The prefix, under a store's root in object storage, of its segments and marker.
const REMOTE_SPANS: &str = "spans";

impl Place {
    /// The local disk under `data_dir`, or `objects` when given (staging in `data_dir`).
    pub fn new(data_dir: &Path, objects: Option<&ObjectStorage>) -> Self {
        match objects {
            None => Self::Local {
                spans_dir: spans_dir(data_dir),
            },
            Some(objects) => Self::Remote {
                objects: objects.clone(),
                staging: data_dir.join("upload"),
            },
        }
    }

    /// Where the segments are, for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Self::Local { spans_dir } => spans_dir.display().to_string(),
            Self::Remote { objects, .. } => format!("{}/{REMOTE_SPANS}", objects.describe()),
        }
    }

    /// Where the files are, as the catalog records it: [`catalog::LOCAL`] or the object
    /// store's address.
    pub fn catalog_location(&self) -> String {
        match self {
            Self::Local { .. } => catalog::LOCAL.to_string(),
            Self::Remote { objects, .. } => objects.describe(),
        }
    }

    /// `segment`'s path relative to the store's root, as the catalog names it
    /// (`spans/date=…/hour=…/part-….parquet`).
    pub fn relative(&self, location: &Location) -> String {
        match (self, location) {
            (Self::Local { spans_dir }, Location::File(path)) => match path.strip_prefix(spans_dir)
            {
                Ok(inner) => format!(
                    "{REMOTE_SPANS}/{}",
                    inner
                        .to_string_lossy()
                        .replace(std::path::MAIN_SEPARATOR, "/")
                ),
                Err(_) => path.display().to_string(),
            },
            (Self::Remote { objects, .. }, Location::Object(_, path)) => {
                objects.relative(path).unwrap_or_else(|| path.to_string())
            }
            (_, other) => other.to_string(),
        }
    }

    /// Where the file the catalog names `relative` is.
    pub fn resolve(&self, relative: &str) -> Location {
        match self {
            Self::Local { spans_dir } => {
                let inner = relative
                    .strip_prefix(REMOTE_SPANS)
                    .map(|rest| rest.trim_start_matches('/'))
                    .unwrap_or(relative);
                let mut path = spans_dir.clone();
                for part in inner.split('/').filter(|p| !p.is_empty()) {
                    path.push(part);
                }
                Location::File(path)
            }
            Self::Remote { objects, .. } => {
                Location::Object(objects.clone(), objects.location(relative))
            }
        }
    }

    /// The catalog's row for `segment`, a file of the flush of WAL records
    /// `wal_seq_min..=segment.wal_seq`.
    pub fn catalog_file(&self, segment: &Segment, wal_seq_min: u64) -> CatalogFile {
        CatalogFile {
            path: self.relative(&segment.location),
            min_start_ns: segment.min_start_ns,
            max_start_ns: segment.max_start_ns,
            services: segment.services.clone(),
            rows: segment.rows,
            bytes: segment.bytes,
            wal_seq_min: wal_seq_min.min(segment.wal_seq),
            wal_seq_max: segment.wal_seq,
        }
    }

    /// The segment the catalog's row `file` describes.
    pub fn segment(&self, file: CatalogFile) -> Segment {
        Segment {
            location: self.resolve(&file.path),
            bytes: file.bytes,
            rows: file.rows,
            min_start_ns: file.min_start_ns,
            max_start_ns: file.max_start_ns,
            services: file.services,
            wal_seq: file.wal_seq_max,
        }
    }

    /// Deletes the file the catalog names `relative`; one already gone is not an error.
    pub fn delete_relative(&self, relative: &str) -> Result<(), StoreError> {
        match self.resolve(relative) {
            Location::File(path) => Ok(delete_file(&path)?),
            Location::Object(objects, location) => objects.delete(&location),
        }
    }

    /// Deletes every segment file (and temporary file) under this place that `known` (the
    /// catalog's paths) does not name: files of a flush or upload that was never
    /// committed. A merged file younger than [`ORPHAN_MERGE_AGE`] stays: a cluster's
    /// compactor may be about to swap it in (it gives up on a merge older than half that).
    /// Returns how many went.
    pub fn sweep_orphans(&self, known: &BTreeSet<String>) -> Result<usize, StoreError> {
        let mut removed = 0;
        match self {
            Self::Local { spans_dir } => {
                let mut files = Vec::new();
                collect_files(spans_dir, &mut files)?;
                for path in files {
                    let name = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    let location = Location::File(path.clone());
                    let young = || {
                        fs::metadata(&path)
                            .and_then(|meta| meta.modified())
                            .ok()
                            .and_then(|at| at.elapsed().ok())
                            .is_none_or(|age| age < ORPHAN_MERGE_AGE)
                    };
                    let orphan = name.ends_with(".tmp")
                        || (name.ends_with(".parquet")
                            && !known.contains(&self.relative(&location))
                            && !(compacted_range(&location).is_some() && young()));
                    if orphan {
                        tracing::info!(path = %path.display(), "removing a file no committed flush names; its spans are replayed from the WAL");
                        fs::remove_file(&path)?;
                        removed += 1;
                    }
                }
            }
            Self::Remote { objects, .. } => {
                for object in objects.list(REMOTE_SPANS)? {
                    if object.location.extension() != Some("parquet") {
                        continue;
                    }
                    let relative = objects
                        .relative(&object.location)
                        .unwrap_or_else(|| object.location.to_string());
                    let age = chrono::Utc::now().signed_duration_since(object.last_modified);
                    let merging = compacted_range(&Location::Object(
                        objects.clone(),
                        object.location.clone(),
                    ))
                    .is_some()
                        && age.to_std().is_ok_and(|age| age < ORPHAN_MERGE_AGE);
                    if !known.contains(&relative) && !merging {
                        tracing::info!(location = %object.location, "removing an object no committed flush names; its spans are replayed from the WAL");
                        objects.delete(&object.location)?;
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Uploads the files `files` of the local data directory `data_dir` to this place's
    /// object storage under the same relative paths (a repeated upload replaces the object
    /// whole). The caller records the new location, then deletes the local files.
    pub fn upload_local(&self, data_dir: &Path, files: &[CatalogFile]) -> Result<(), StoreError> {
        let Self::Remote { objects, .. } = self else {
            return Ok(());
        };
        let local = Place::new(data_dir, None);
        for file in files {
            if let Location::File(path) = local.resolve(&file.path)
                && path.exists()
            {
                objects.upload(&path, &objects.location(&file.path))?;
            }
        }
        Ok(())
    }

    /// Whether a marker file of the store before the catalog is here.
    pub fn has_legacy_marker(&self) -> Result<bool, StoreError> {
        match self {
            Self::Local { spans_dir } => Ok(spans_dir.join(COMMIT_FILE).exists()),
            Self::Remote { objects, .. } => Ok(objects
                .get_if_exists(&objects.location(&format!("{REMOTE_SPANS}/{COMMIT_FILE}")))?
                .is_some()),
        }
    }

    /// Deletes the marker of the store before the catalog, once the catalog holds what it
    /// said.
    pub fn remove_legacy_marker(&self) -> Result<(), StoreError> {
        match self {
            Self::Local { spans_dir } => {
                delete_file(&spans_dir.join(COMMIT_FILE))?;
                sync_dir(spans_dir)?;
                Ok(())
            }
            Self::Remote { objects, .. } => {
                objects.delete(&objects.location(&format!("{REMOTE_SPANS}/{COMMIT_FILE}")))
            }
        }
    }

    /// Creates the local directory this place writes in, and empties the staging directory
    /// of files an interrupted flush left.
    pub fn prepare(&self) -> Result<(), StoreError> {
        let dir = match self {
            Self::Local { spans_dir } => spans_dir,
            Self::Remote { staging, .. } => staging,
        };
        fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create {}: {e}; check --data-dir and its permissions",
                dir.display()
            ))
        })?;
        if let Self::Remote { staging, .. } = self {
            for entry in fs::read_dir(staging)? {
                fs::remove_file(entry?.path())?;
            }
        }
        Ok(())
    }

    /// The WAL sequence number of the last committed flush (0 before the first).
    pub fn read_committed(&self) -> Result<u64, StoreError> {
        match self {
            Self::Local { spans_dir } => read_committed(spans_dir),
            Self::Remote { objects, .. } => {
                let location = objects.location(&format!("{REMOTE_SPANS}/{COMMIT_FILE}"));
                match objects.get_if_exists(&location)? {
                    None => Ok(0),
                    Some(bytes) => parse_committed(&bytes, location.as_ref()),
                }
            }
        }
    }

    fn write_committed(&self, wal_seq: u64) -> Result<(), StoreError> {
        match self {
            Self::Local { spans_dir } => Ok(write_committed(spans_dir, wal_seq)?),
            Self::Remote { objects, .. } => objects.put(
                &objects.location(&format!("{REMOTE_SPANS}/{COMMIT_FILE}")),
                wal_seq.to_string().into(),
            ),
        }
    }

    /// Every committed segment, deleting leftovers of an interrupted flush (temporary
    /// files, files of an uncommitted flush).
    pub fn load_segments(&self, committed: u64) -> Result<Vec<Segment>, StoreError> {
        let mut segments = match self {
            Self::Local { spans_dir } => load_segments(spans_dir, committed)?,
            Self::Remote { objects, .. } => {
                let mut segments = Vec::new();
                for object in objects.list(REMOTE_SPANS)? {
                    if object.location.extension() != Some("parquet") {
                        continue;
                    }
                    let footer = objects.footer(&object)?;
                    let location = Location::Object(objects.clone(), object.location.clone());
                    let segment = segment_meta(location, object.size, footer.file_metadata())?;
                    if segment.wal_seq > committed {
                        tracing::info!(location = %segment.location, "removing a segment of an interrupted flush; its spans are replayed from the WAL");
                        objects.delete(&object.location)?;
                        continue;
                    }
                    segments.push(segment);
                }
                segments
            }
        };
        segments.sort_by_key(|s| (s.min_start_ns, s.wal_seq));
        Ok(without_compacted_away(segments))
    }

    /// Deletes a committed segment (retention).
    pub fn delete(&self, segment: &Segment) -> Result<(), StoreError> {
        match &segment.location {
            Location::File(path) => Ok(delete_file(path)?),
            Location::Object(objects, location) => objects.delete(location),
        }
    }

    /// Moves the committed segments of a local data directory into object storage, once:
    /// each file is uploaded to the same relative path, the remote marker is raised to the
    /// local one, and only then are the local files and marker deleted. A crash on the way
    /// repeats it on the next start (uploads of the same name replace each other).
    pub fn migrate_local(&self, data_dir: &Path) -> Result<usize, StoreError> {
        let Self::Remote { objects, .. } = self else {
            return Ok(0);
        };
        let local = spans_dir(data_dir);
        if !local.join(COMMIT_FILE).exists() {
            return Ok(0);
        }
        let committed = read_committed(&local)?;
        let segments = load_segments(&local, committed)?;
        for segment in &segments {
            let Location::File(path) = &segment.location else {
                continue;
            };
            let relative = path.strip_prefix(&local).map_err(|_| {
                StoreError::Internal(format!("{} is outside {}", path.display(), local.display()))
            })?;
            let relative = relative
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            objects.upload(
                path,
                &objects.location(&format!("{REMOTE_SPANS}/{relative}")),
            )?;
        }
        if self.read_committed()? < committed {
            self.write_committed(committed)?;
        }
        for segment in &segments {
            if let Location::File(path) = &segment.location {
                delete_file(path)?;
            }
        }
        fs::remove_file(local.join(COMMIT_FILE))?;
        sync_dir(&local)?;
        Ok(segments.len())
    }
}

fn parse_committed(text: &[u8], name: &str) -> Result<u64, StoreError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "{name} does not hold a number; restore it or delete the data directory"
            ))
        })
}

/// The WAL sequence number of the last committed flush (0 before the first).
pub fn read_committed(spans_dir: &Path) -> Result<u64, StoreError> {
    let path = spans_dir.join(COMMIT_FILE);
    match fs::read(&path) {
        Ok(text) => parse_committed(&text, &path.display().to_string()),
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
/// The WAL range `(min, max)` a compacted file's name (`part-<max>-c<min>.parquet`) holds.
/// How old an uncommitted merged file must be before a store sweeps it away as an orphan:
/// the store's own interrupted compaction left it, or a cluster's compactor that gave up.
pub const ORPHAN_MERGE_AGE: std::time::Duration = std::time::Duration::from_secs(10 * 60);

pub(crate) fn compacted_range(location: &Location) -> Option<(u64, u64)> {
    let name = match location {
        Location::File(path) => path.file_name()?.to_str()?.to_string(),
        Location::Object(_, location) => location.filename()?.to_string(),
    };
    let (max, min) = name
        .strip_prefix("part-")?
        .strip_suffix(".parquet")?
        .split_once("-c")?;
    Some((min.parse().ok()?, max.parse().ok()?))
}

/// Files found by listing, without those a compaction merged into another file found
/// there too (dropped from a catalog that is now lost, still within their grace period):
/// adopting both would show their spans twice.
fn without_compacted_away(segments: Vec<Segment>) -> Vec<Segment> {
    let hour = |segment: &Segment| segment.min_start_ns.div_euclid(NANOS_PER_HOUR);
    let merged: Vec<(i64, u64, u64)> = segments
        .iter()
        .filter_map(|segment| {
            compacted_range(&segment.location).map(|(min, max)| (hour(segment), min, max))
        })
        .collect();
    if merged.is_empty() {
        return segments;
    }
    segments
        .into_iter()
        .filter(|segment| {
            let (min, max) =
                compacted_range(&segment.location).unwrap_or((segment.wal_seq, segment.wal_seq));
            !merged.iter().any(|&(h, from, to)| {
                h == hour(segment) && from <= min && max <= to && (from, to) != (min, max)
            })
        })
        .collect()
}

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
    let file = File::open(path)?;
    let bytes = file.metadata()?.len();
    let reader = SerializedFileReader::new(file).map_err(|e| {
        StoreError::Corrupt(format!(
            "segment {} is not readable Parquet ({e}); move it out of the data directory to start without it",
            path.display()
        ))
    })?;
    segment_meta(
        Location::File(path.to_path_buf()),
        bytes,
        reader.metadata().file_metadata(),
    )
}

/// What the store knows of a segment, from its footer's key-value metadata.
fn segment_meta(
    location: Location,
    bytes: u64,
    meta: &parquet::file::metadata::FileMetaData,
) -> Result<Segment, StoreError> {
    let corrupt = |what: &str| {
        StoreError::Corrupt(format!(
            "segment {location} {what}; move it out of the data directory (or bucket) to start without it"
        ))
    };
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
        bytes,
        rows: meta.num_rows().max(0) as u64,
        min_start_ns: number(KEY_MIN_START)?,
        max_start_ns: number(KEY_MAX_START)?,
        services,
        wal_seq: number(KEY_WAL_SEQ)? as u64,
        location,
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

/// Columns inside attributes, resource attributes, events and links: nothing prunes on
/// their minimum and maximum, and comparing every key and value for them cost the flusher
/// more than any other statistic.
static NESTED_LEAVES: LazyLock<Vec<ColumnPath>> = LazyLock::new(|| {
    const NESTED: [&str; 4] = [
        columns::ATTRIBUTES,
        columns::RESOURCE_ATTRIBUTES,
        columns::EVENTS,
        columns::LINKS,
    ];
    match ArrowSchemaConverter::new().convert(&storage_schema()) {
        Ok(schema) => schema
            .columns()
            .iter()
            .map(|column| column.path().clone())
            .filter(|path| {
                path.parts()
                    .first()
                    .is_some_and(|top| NESTED.contains(&top.as_str()))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
});

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
    for path in NESTED_LEAVES.iter() {
        builder = builder.set_column_statistics_enabled(path.clone(), EnabledStatistics::None);
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

/// Rows the flusher gathers into sorted order and hands to the Parquet writer at a time.
/// Small enough that the allocator reuses the same memory for every chunk: gathering a
/// whole memtable at once took hundreds of MiB of fresh pages per flush, and the flusher's
/// page faults and zeroing were 5-10% of the server's CPU in the profiles (BENCHMARKS.md).
const WRITE_CHUNK_ROWS: usize = 16 * 1024;
/// A chunk whose rows lie in runs at least this long (on average) in the memtable's
/// batches, as they do when spans arrive in time order, is written as slices of those
/// batches instead of being gathered into a new one.
const SLICE_RUN_ROWS: usize = 256;

/// A row of the memtable: (batch, row in that batch), as arrow's `interleave` takes it.
type RowRef = (usize, usize);

/// The memtable being flushed: its batches as they are (concatenating them first was a
/// copy of every span and its fresh pages), and their `start_time` columns.
struct Memtable<'a> {
    batches: Vec<&'a RecordBatch>,
    starts: Vec<&'a PrimitiveArray<TimestampNanosecondType>>,
}

impl<'a> Memtable<'a> {
    fn new(batches: &'a [RecordBatch]) -> Result<Self, StoreError> {
        let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
        let starts = batches
            .iter()
            .map(|batch| start_times(batch))
            .collect::<Result<_, _>>()?;
        Ok(Self { batches, starts })
    }

    fn start(&self, (batch, row): RowRef) -> i64 {
        self.starts[batch].value(row)
    }

    /// Every row in `start_time` order (stable: equal times keep arrival order).
    fn order_by_start(&self) -> Vec<RowRef> {
        let mut order: Vec<RowRef> = self
            .batches
            .iter()
            .enumerate()
            .flat_map(|(batch, rows)| (0..rows.num_rows()).map(move |row| (batch, row)))
            .collect();
        // Spans mostly arrive in time order; then there is nothing to sort.
        if !order
            .windows(2)
            .all(|pair| self.start(pair[0]) <= self.start(pair[1]))
        {
            order.sort_by_key(|&at| self.start(at));
        }
        order
    }

    /// The rows `rows` as batches to write: slices of the memtable's batches where the rows
    /// lie in long runs, else one batch gathered from them.
    fn gather(&self, rows: &[RowRef]) -> Result<Vec<RecordBatch>, StoreError> {
        let mut runs: Vec<(usize, usize, usize)> = Vec::new();
        for &(batch, row) in rows {
            match runs.last_mut() {
                Some((b, first, len)) if *b == batch && *first + *len == row => *len += 1,
                _ => runs.push((batch, row, 1)),
            }
        }
        if runs.len() * SLICE_RUN_ROWS <= rows.len() {
            return Ok(runs
                .into_iter()
                .map(|(batch, first, len)| self.batches[batch].slice(first, len))
                .collect());
        }
        Ok(vec![interleave_record_batch(&self.batches, rows)?])
    }
}

/// Writes `batches` (all covered by WAL segments up to `wal_seq`) as one Parquet file per
/// hour of `start_time`, sorted by `start_time`. Returns the new segments, durable and not
/// yet committed: the caller commits them in the catalog.
pub fn write_flush(
    place: &Place,
    batches: &[RecordBatch],
    wal_seq: u64,
) -> Result<Vec<Segment>, StoreError> {
    write_runs(
        place,
        batches,
        wal_seq,
        &format!("part-{wal_seq:020}.parquet"),
    )
}

/// Writes the spans of compacted files (WAL records `wal_seq_min..=wal_seq`) as one file
/// per hour, named apart from any flush's (`part-<max>-c<min>.parquet`).
pub fn write_compacted(
    place: &Place,
    batches: &[RecordBatch],
    wal_seq: u64,
    wal_seq_min: u64,
) -> Result<Vec<Segment>, StoreError> {
    write_runs(
        place,
        batches,
        wal_seq,
        &format!("part-{wal_seq:020}-c{wal_seq_min:020}.parquet"),
    )
}

fn write_runs(
    place: &Place,
    batches: &[RecordBatch],
    wal_seq: u64,
    name: &str,
) -> Result<Vec<Segment>, StoreError> {
    let memtable = Memtable::new(batches)?;
    let order = memtable.order_by_start();
    let mut segments = Vec::new();
    for run in runs_by_hour(&memtable, &order) {
        segments.push(write_segment(place, &memtable, &order[run], wal_seq, name)?);
    }
    Ok(segments)
}

fn start_times(
    batch: &RecordBatch,
) -> Result<&PrimitiveArray<TimestampNanosecondType>, StoreError> {
    batch
        .column_by_name(columns::START_TIME)
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or_else(|| StoreError::Internal("span batch has no start_time column".into()))
}

/// Splits rows in `start_time` order into runs of the same hour.
fn runs_by_hour(memtable: &Memtable<'_>, order: &[RowRef]) -> Vec<std::ops::Range<usize>> {
    let hour = |at: usize| memtable.start(order[at]).div_euclid(NANOS_PER_HOUR);
    let mut runs = Vec::new();
    let mut run_start = 0;
    for at in 1..=order.len() {
        if at == order.len() || hour(at) != hour(run_start) {
            runs.push(run_start..at);
            run_start = at;
        }
    }
    runs
}

/// Writes the rows `rows` of the memtable (in that order, all of one hour) as one segment.
fn write_segment(
    place: &Place,
    memtable: &Memtable<'_>,
    rows: &[RowRef],
    wal_seq: u64,
    name: &str,
) -> Result<Segment, StoreError> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Err(StoreError::Internal("an empty segment".into()));
    };
    let (min_start_ns, max_start_ns) = (memtable.start(*first), memtable.start(*last));
    let services = distinct_services(memtable, rows);
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
    let partition = hour_partition(min_start_ns);
    let (tmp, dir) = match place {
        Place::Local { spans_dir } => {
            let dir = spans_dir.join(&partition);
            (dir.join(format!("{name}.tmp")), Some(dir))
        }
        Place::Remote { staging, .. } => (staging.join(format!("{name}.tmp")), None),
    };
    if let Some(dir) = &dir {
        fs::create_dir_all(dir)?;
    }
    let written = write_parquet(&tmp, memtable, rows, metadata);
    let (bytes, location) = match (written, place, &dir) {
        (Err(error), _, _) => {
            // A half-written file (the disk filled up) is never renamed into place; removing
            // it gives its space back for the retry.
            let _ = fs::remove_file(&tmp);
            return Err(error);
        }
        (Ok(bytes), Place::Local { .. }, Some(dir)) => {
            let path = dir.join(name);
            fs::rename(&tmp, &path)?;
            sync_dir(dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
            (bytes, Location::File(path))
        }
        (Ok(_), Place::Remote { objects, .. }, _) => {
            let partition = partition
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            let location = objects.location(&format!("{REMOTE_SPANS}/{partition}/{name}"));
            let uploaded = objects.upload(&tmp, &location);
            let _ = fs::remove_file(&tmp);
            (uploaded?, Location::Object(objects.clone(), location))
        }
        (Ok(_), Place::Local { .. }, None) => {
            return Err(StoreError::Internal(
                "a local segment without its directory".into(),
            ));
        }
    };
    Ok(Segment {
        location,
        bytes,
        rows: rows.len() as u64,
        min_start_ns,
        max_start_ns,
        services,
        wal_seq,
    })
}

/// Writes the rows `rows` of the memtable as a complete, fsynced Parquet file at `tmp`, a
/// chunk at a time; returns its size.
fn write_parquet(
    tmp: &Path,
    memtable: &Memtable<'_>,
    rows: &[RowRef],
    metadata: Vec<KeyValue>,
) -> Result<u64, StoreError> {
    let Some(&(first_batch, _)) = rows.first() else {
        return Err(StoreError::Internal("an empty segment".into()));
    };
    let file = File::create(tmp)?;
    let mut writer = ArrowWriter::try_new(
        file,
        memtable.batches[first_batch].schema(),
        Some(writer_properties(metadata, rows.len())),
    )?;
    for chunk in rows.chunks(WRITE_CHUNK_ROWS) {
        for part in memtable.gather(chunk)? {
            writer.write(&part)?;
        }
    }
    let file = writer.into_inner()?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

/// The service names among `rows`, or `None` past [`MAX_LISTED_SERVICES`].
fn distinct_services(memtable: &Memtable<'_>, rows: &[RowRef]) -> Option<BTreeSet<String>> {
    let columns: Vec<&StringArray> = memtable
        .batches
        .iter()
        .map(|batch| {
            batch
                .column_by_name(columns::SERVICE_NAME)?
                .as_string_opt::<i32>()
        })
        .collect::<Option<_>>()?;
    let mut services = BTreeSet::new();
    let mut previous = None;
    for &(batch, row) in rows {
        let column = columns[batch];
        if column.is_null(row) {
            continue;
        }
        let name = column.value(row);
        // Neighbours often share a service; a set lookup per row is the costly part.
        if previous != Some(name) && !services.contains(name) {
            if services.len() == MAX_LISTED_SERVICES {
                return None;
            }
            services.insert(name.to_string());
        }
        previous = Some(name);
    }
    Some(services)
}

/// Deletes a segment file and the hour and date directories it leaves empty.
fn delete_file(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    let mut dir = path.parent();
    for _ in 0..2 {
        let Some(current) = dir else { break };
        if fs::remove_dir(current).is_err() {
            break; // not empty
        }
        dir = current.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::FixedSizeBinaryArray;
    use arrow::compute::concat_batches;
    use flowscope_model::SpanBatchBuilder;
    use flowscope_model::schema::SpanRecord;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// Spans `ids`, span id `i` starting at `start(i)`, each with an attribute naming it.
    fn spans(ids: std::ops::Range<u32>, start: impl Fn(u32) -> i64) -> RecordBatch {
        let mut builder = SpanBatchBuilder::with_capacity(ids.len());
        for i in ids {
            let mut span_id = [1u8; 8];
            span_id[4..].copy_from_slice(&i.to_be_bytes());
            let record = SpanRecord {
                trace_id: &[7; 16],
                span_id: &span_id,
                name: "op",
                kind: "SERVER",
                service_name: ["checkout", "payments", "stock"][i as usize % 3],
                start_time_unix_nano: start(i),
                end_time_unix_nano: start(i) + 10,
                status_code: "UNSET",
                ..SpanRecord::default()
            };
            let attribute = [("span", i.to_string())];
            let resource: [(&str, &str); 0] = [];
            if let Err(error) = builder.append(&record, &attribute, &resource, &[], &[]) {
                panic!("the test span is valid: {error}");
            }
        }
        match builder.finish() {
            Ok(batch) => batch,
            Err(error) => panic!("the test batch builds: {error}"),
        }
    }

    /// Each row's span number (from its span id), checked against the attribute that names
    /// it: a row's columns moved together.
    fn span_numbers(batch: &RecordBatch) -> Vec<u32> {
        let ids = batch
            .column_by_name(columns::SPAN_ID)
            .and_then(|c| c.as_any().downcast_ref::<FixedSizeBinaryArray>())
            .expect("span ids");
        let attributes = batch
            .column_by_name(columns::ATTRIBUTES)
            .expect("attributes")
            .as_map();
        (0..batch.num_rows())
            .map(|row| {
                let id = u32::from_be_bytes(ids.value(row)[4..].try_into().expect("4 bytes"));
                let values = attributes.value(row);
                assert_eq!(values.column(1).as_string::<i32>().value(0), id.to_string());
                id
            })
            .collect()
    }

    fn read(segment: &Segment) -> RecordBatch {
        let Location::File(path) = &segment.location else {
            panic!("a local segment");
        };
        let file = File::open(path).expect("open");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
        concat_batches(&batches[0].schema(), &batches).expect("concat")
    }

    #[test]
    fn a_flush_in_any_arrival_order_writes_each_hour_sorted_with_every_row_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hour = NANOS_PER_HOUR;
        let base = 490_000 * hour;
        // Out of order, across two hours, with equal start times, over more rows than one
        // write chunk, in three batches as the memtable holds them.
        let at = |i: u32| base + hour - 20_000 * 1_000 + ((i * 7919) % 40_000) as i64 * 1_000;
        let batches = vec![
            spans(0..20_000, at),
            spans(20_000..40_000, at),
            spans(40_000..40_010, |_| base + hour),
        ];
        let place = Place::new(dir.path(), None);
        place.prepare().expect("prepare");
        let segments = write_flush(&place, &batches, 9).expect("flush");
        assert_eq!(segments.len(), 2, "one file per hour");
        let mut seen = std::collections::HashSet::new();
        for segment in &segments {
            let batch = read(segment);
            assert_eq!(batch.num_rows() as u64, segment.rows);
            let start = start_times(&batch).expect("start").values().to_vec();
            assert!(
                start.windows(2).all(|p| p[0] <= p[1]),
                "sorted by start_time"
            );
            assert_eq!(
                (start[0], start[start.len() - 1]),
                (segment.min_start_ns, segment.max_start_ns)
            );
            assert!(
                start
                    .iter()
                    .all(|s| s.div_euclid(hour) == start[0].div_euclid(hour))
            );
            for (id, start) in span_numbers(&batch).into_iter().zip(&start) {
                assert!(seen.insert(id), "span {id} written twice");
                // The row's other columns moved with it.
                let expected = if id >= 40_000 { base + hour } else { at(id) };
                assert_eq!(*start, expected, "span {id}'s start time");
            }
            let services = segment.services.as_ref().expect("services listed");
            assert_eq!(services.len(), 3);
        }
        assert_eq!(seen.len(), 40_010);
        assert!(
            segments.iter().all(|segment| segment.wal_seq == 9),
            "each file carries the flush's WAL position, for the catalog to commit"
        );
    }

    #[test]
    fn spans_arriving_in_order_in_small_batches_are_written_as_they_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = 490_000 * NANOS_PER_HOUR;
        // Exporter-size batches in time order, one of them empty, and one late batch whose
        // rows belong between the others: written as slices, the late rows in their place.
        let at = |i: u32| base + i64::from(i) * 1_000;
        let mut batches: Vec<RecordBatch> =
            (0..80).map(|n| spans(n * 512..(n + 1) * 512, at)).collect();
        batches.insert(40, spans(0..0, at));
        batches.push(spans(100_000..100_100, |_| at(20_000) + 1));
        let place = Place::new(dir.path(), None);
        place.prepare().expect("prepare");
        let segments = write_flush(&place, &batches, 3).expect("flush");
        assert_eq!(segments.len(), 1);
        let batch = read(&segments[0]);
        assert_eq!(batch.num_rows(), 80 * 512 + 100);
        let start = start_times(&batch).expect("start").values().to_vec();
        assert!(
            start.windows(2).all(|p| p[0] <= p[1]),
            "sorted by start_time"
        );
        let late: Vec<usize> = (span_numbers(&batch).into_iter().enumerate())
            .filter(|&(_, id)| id >= 100_000)
            .map(|(row, _)| row)
            .collect();
        assert_eq!(
            late,
            (20_001..20_101).collect::<Vec<_>>(),
            "the late spans in place"
        );
    }
}

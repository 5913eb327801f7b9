//! The live graph's buckets kept past its horizon, so an old window is merged from stored
//! statistics (milliseconds) instead of rebuilt from spans (seconds per million spans).
//!
//! ```text
//!  data_dir/graph/buckets-YYYYMMDDHH.log   records of StoredBucket::encode, by bucket start hour
//!  data_dir/graph/covered.log              records (from_ns, to_ns): every bucket starting in
//!                                          [from, to) that had calls is in the bucket files
//!  record = len u32 | crc32 u32 | payload   (a bad record ends a file's readable part)
//! ```
//!
//! With object storage (`--object-store`) an hour's bucket file, once no more buckets can
//! come to it, is sealed: uploaded whole to `graph/buckets-YYYYMMDDHH.log` under the store's
//! prefix, recorded in the catalog (kind `rollups`) and only then deleted locally. Reads take
//! an hour's records from the local file and from its object. `covered.log` stays local: a
//! new node over the same bucket rebuilds its old windows from spans until it has claims of
//! its own.
//!
//! **Invariant:** a range is claimed covered only after its buckets are written and fsynced,
//! so a crash leaves at worst a range unclaimed, which the reader then rebuilds from spans.
//! A window is answered from here only when every bucket start in it is covered; otherwise
//! the caller rebuilds it.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use bytes::Bytes;
use flowscope_graph::StoredBucket;

use crate::error::StoreError;
use crate::store::catalog::{Catalog, CatalogFile, KIND_ROLLUPS};
use crate::store::objects::ObjectStorage;

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
const COVERED: &str = "covered.log";

/// The bucket files of one data directory, and with object storage their sealed hours.
#[derive(Debug)]
pub struct Rollups {
    dir: PathBuf,
    /// One writer at a time (the graph stage), against concurrent retention.
    write: Mutex<()>,
    remote: Option<Remote>,
}

/// Where sealed hours go: the store's object storage and its catalog.
#[derive(Debug)]
struct Remote {
    objects: ObjectStorage,
    catalog: Catalog,
    /// The sealed hours' paths (`graph/buckets-….log`), as the catalog has them. Written
    /// (an hour moved from the local file to its object) while readers wait, so a reader
    /// sees each record once: in the local file or in the object.
    sealed: RwLock<BTreeSet<String>>,
}

/// Runs `work`, which may block on a runtime, off the caller's runtime when it has one.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|scope| {
            scope
                .spawn(work)
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    } else {
        work()
    }
}

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The whole of a local file; empty when there is none.
fn read_all(path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes)?;
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// The payloads of a file's good records, up to the first bad one.
fn records(path: &Path) -> Result<Vec<Vec<u8>>, StoreError> {
    Ok(parse(&read_all(path)?))
}

/// The payloads of good records in `bytes`, up to the first bad one.
fn parse(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.push(payload.to_vec());
        at += 8 + len;
    }
    out
}

fn append(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    Ok(())
}

fn hour_of(ns: i64) -> i64 {
    ns.div_euclid(NANOS_PER_HOUR)
}

/// The file name of hour `hour`'s buckets.
fn bucket_name(hour: i64) -> String {
    match arrow::temporal_conversions::timestamp_ns_to_datetime(hour.saturating_mul(NANOS_PER_HOUR))
    {
        Some(time) => format!("buckets-{}.log", time.format("%Y%m%d%H")),
        None => format!("buckets-h{hour}.log"),
    }
}

/// The hour a bucket file's name stands for.
fn hour_of_name(name: &str) -> Option<i64> {
    let stamp = name.strip_prefix("buckets-")?.strip_suffix(".log")?;
    let start = arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(&format!(
        "{}-{}-{}T{}:00:00Z",
        stamp.get(0..4)?,
        stamp.get(4..6)?,
        stamp.get(6..8)?,
        stamp.get(8..10)?,
    ))
    .ok()?;
    Some(hour_of(start))
}

/// An hour's path relative to the store's root, as the catalog and the bucket name it.
fn remote_path(hour: i64) -> String {
    format!("graph/{}", bucket_name(hour))
}

impl Rollups {
    /// The bucket files of `data_dir`, kept there.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, None)
    }

    /// The bucket files of `data_dir`; with `remote` (the store's object storage and
    /// catalog) complete hours are sealed into object storage.
    pub fn open_with(
        data_dir: &Path,
        remote: Option<(ObjectStorage, Catalog)>,
    ) -> Result<Self, StoreError> {
        let dir = data_dir.join("graph");
        fs::create_dir_all(&dir)?;
        let remote = match remote {
            None => None,
            Some((objects, catalog)) => {
                let sealed = off_runtime(|| catalog.files_of(KIND_ROLLUPS))?
                    .into_iter()
                    .map(|file| file.path)
                    .collect();
                Some(Remote {
                    objects,
                    catalog,
                    sealed: RwLock::new(sealed),
                })
            }
        };
        Ok(Self {
            dir,
            write: Mutex::new(()),
            remote,
        })
    }

    fn bucket_file(&self, hour: i64) -> PathBuf {
        self.dir.join(bucket_name(hour))
    }

    /// Local bucket files' hours, oldest first.
    fn local_hours(&self) -> Result<Vec<i64>, StoreError> {
        let mut hours = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if let Some(hour) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(hour_of_name)
            {
                hours.push(hour);
            }
        }
        hours.sort_unstable();
        Ok(hours)
    }

    /// Seals the local hours that end at or before `complete_before_ns` (no bucket can come
    /// to them: later appends start there). An hour sealed before and written again (a
    /// clock set back) is merged with its object. Upload, then catalog, then the local
    /// file goes: a crash between leaves the local file, sealed again next time.
    fn seal(&self, remote: &Remote, complete_before_ns: i64) -> Result<usize, StoreError> {
        let mut sealed = 0;
        for hour in self.local_hours()? {
            if (hour + 1).saturating_mul(NANOS_PER_HOUR) > complete_before_ns {
                continue;
            }
            let local = self.bucket_file(hour);
            let path = remote_path(hour);
            let location = remote.objects.location(&path);
            let mut sealed_hours = remote
                .sealed
                .write()
                .map_err(|_| StoreError::Internal("the sealed hours' lock is poisoned".into()))?;
            let known = sealed_hours.contains(&path);
            let mut bytes = if known {
                off_runtime(|| remote.objects.get_if_exists(&location))?
                    .map(|b| b.to_vec())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            bytes.extend_from_slice(&read_all(&local)?);
            let records = parse(&bytes).len() as u64;
            let size = bytes.len() as u64;
            let file = CatalogFile {
                path: path.clone(),
                min_start_ns: hour.saturating_mul(NANOS_PER_HOUR),
                max_start_ns: (hour + 1).saturating_mul(NANOS_PER_HOUR) - 1,
                services: None,
                rows: records,
                bytes: size,
                wal_seq_min: 0,
                wal_seq_max: 0,
            };
            off_runtime(|| {
                remote.objects.put(&location, Bytes::from(bytes))?;
                remote
                    .catalog
                    .keep(KIND_ROLLUPS, std::slice::from_ref(&file))
            })?;
            sealed_hours.insert(path);
            fs::remove_file(&local)?;
            drop(sealed_hours);
            sealed += 1;
        }
        Ok(sealed)
    }

    /// An hour's records: its local file's, then its sealed object's.
    fn hour_records(&self, hour: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        let Some(remote) = &self.remote else {
            return records(&self.bucket_file(hour));
        };
        let sealed = remote
            .sealed
            .read()
            .map_err(|_| StoreError::Internal("the sealed hours' lock is poisoned".into()))?;
        let mut found = records(&self.bucket_file(hour))?;
        {
            let path = remote_path(hour);
            if sealed.contains(&path) {
                let location = remote.objects.location(&path);
                if let Some(bytes) = off_runtime(|| remote.objects.get_if_exists(&location))? {
                    found.extend(parse(&bytes));
                }
            }
        }
        Ok(found)
    }

    /// Keeps `buckets` and then claims `[from_ns, to_ns)` covered; buckets outside the
    /// range are not written (they may hold only part of their calls).
    pub fn append(
        &self,
        buckets: &[StoredBucket],
        from_ns: i64,
        to_ns: i64,
    ) -> Result<(), StoreError> {
        if to_ns <= from_ns {
            return Ok(());
        }
        let _writing = self.write.lock();
        let mut by_hour: std::collections::BTreeMap<i64, Vec<u8>> = Default::default();
        for bucket in buckets
            .iter()
            .filter(|b| (from_ns..to_ns).contains(&b.start_ns()))
        {
            frame(
                &bucket.encode(),
                by_hour.entry(hour_of(bucket.start_ns())).or_default(),
            );
        }
        for (hour, bytes) in &by_hour {
            append(&self.bucket_file(*hour), bytes)?;
        }
        let mut claim = Vec::with_capacity(16);
        claim.extend_from_slice(&from_ns.to_le_bytes());
        claim.extend_from_slice(&to_ns.to_le_bytes());
        let mut record = Vec::with_capacity(24);
        frame(&claim, &mut record);
        append(&self.dir.join(COVERED), &record)?;
        if let Some(remote) = &self.remote {
            // Not sealed now is sealed at the next append: the local file keeps the buckets.
            if let Err(error) = self.seal(remote, to_ns) {
                tracing::warn!(%error, "cannot move complete hours of graph buckets to object storage; trying again later");
            }
        }
        Ok(())
    }

    /// The kept buckets starting in `[from_ns, to_ns)`, or `None` when some part of that
    /// range is not covered (then the window must be rebuilt from spans).
    pub fn load(&self, from_ns: i64, to_ns: i64) -> Result<Option<Vec<StoredBucket>>, StoreError> {
        if to_ns <= from_ns {
            return Ok(Some(Vec::new()));
        }
        let mut claims: Vec<(i64, i64)> = records(&self.dir.join(COVERED))?
            .iter()
            .filter_map(|r| {
                let from = i64::from_le_bytes(r.get(..8)?.try_into().ok()?);
                let to = i64::from_le_bytes(r.get(8..16)?.try_into().ok()?);
                Some((from, to))
            })
            .collect();
        claims.sort_unstable();
        let mut reached = from_ns;
        for (from, to) in claims {
            if from > reached {
                break;
            }
            reached = reached.max(to);
        }
        if reached < to_ns {
            return Ok(None);
        }
        let mut found = Vec::new();
        for hour in hour_of(from_ns)..=hour_of(to_ns - 1) {
            for payload in self.hour_records(hour)? {
                let bucket = StoredBucket::decode(&payload).map_err(|e| {
                    StoreError::Corrupt(format!("{}: {e}", self.bucket_file(hour).display()))
                })?;
                if (from_ns..to_ns).contains(&bucket.start_ns()) {
                    found.push(bucket);
                }
            }
        }
        Ok(Some(found))
    }

    /// Deletes the bucket files (and sealed objects) of hours that ended before
    /// `cutoff_ns` (retention).
    pub fn remove_older_than(&self, cutoff_ns: i64) -> Result<usize, StoreError> {
        let _writing = self.write.lock();
        let expired = |hour: i64| (hour + 1).saturating_mul(NANOS_PER_HOUR) < cutoff_ns;
        let mut removed = 0;
        for hour in self.local_hours()? {
            if expired(hour) {
                fs::remove_file(self.bucket_file(hour))?;
                removed += 1;
            }
        }
        if let Some(remote) = &self.remote {
            let old: Vec<String> = remote
                .sealed
                .read()
                .map(|sealed| {
                    sealed
                        .iter()
                        .filter(|path| {
                            path.strip_prefix("graph/")
                                .and_then(hour_of_name)
                                .is_some_and(expired)
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for path in old {
                // Out of the catalog first: a read from now on does not look for it.
                off_runtime(|| {
                    remote
                        .catalog
                        .mark_deleted_of(KIND_ROLLUPS, std::slice::from_ref(&path))?;
                    remote.objects.delete(&remote.objects.location(&path))?;
                    remote.catalog.forget_of(KIND_ROLLUPS, &path)
                })?;
                if let Ok(mut sealed) = remote.sealed.write() {
                    sealed.remove(&path);
                }
                removed += 1;
            }
        }
        Ok(removed)
    }
}

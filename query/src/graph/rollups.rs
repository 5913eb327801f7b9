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
//! **Invariant:** a range is claimed covered only after its buckets are written and fsynced,
//! so a crash leaves at worst a range unclaimed, which the reader then rebuilds from spans.
//! A window is answered from here only when every bucket start in it is covered; otherwise
//! the caller rebuilds it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use flowscope_graph::StoredBucket;

use crate::error::StoreError;

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
const COVERED: &str = "covered.log";

/// The bucket files of one data directory.
#[derive(Debug)]
pub struct Rollups {
    dir: PathBuf,
    /// One writer at a time (the graph stage), against concurrent retention.
    write: Mutex<()>,
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

/// The payloads of a file's good records, up to the first bad one.
fn records(path: &Path) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    }
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
    Ok(out)
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

impl Rollups {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let dir = data_dir.join("graph");
        fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            write: Mutex::new(()),
        })
    }

    fn bucket_file(&self, hour: i64) -> PathBuf {
        let name = match arrow::temporal_conversions::timestamp_ns_to_datetime(
            hour.saturating_mul(NANOS_PER_HOUR),
        ) {
            Some(time) => format!("buckets-{}.log", time.format("%Y%m%d%H")),
            None => format!("buckets-h{hour}.log"),
        };
        self.dir.join(name)
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
        append(&self.dir.join(COVERED), &record)
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
            for payload in records(&self.bucket_file(hour))? {
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

    /// Deletes the bucket files of hours that ended before `cutoff_ns` (retention).
    pub fn remove_older_than(&self, cutoff_ns: i64) -> Result<usize, StoreError> {
        let _writing = self.write.lock();
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(stamp) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("buckets-"))
                .and_then(|n| n.strip_suffix(".log"))
            else {
                continue;
            };
            let Ok(hour_start) =
                arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(&format!(
                    "{}-{}-{}T{}:00:00Z",
                    stamp.get(0..4).unwrap_or("x"),
                    stamp.get(4..6).unwrap_or("x"),
                    stamp.get(6..8).unwrap_or("x"),
                    stamp.get(8..10).unwrap_or("x"),
                ))
            else {
                continue;
            };
            if hour_start + NANOS_PER_HOUR < cutoff_ns {
                fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

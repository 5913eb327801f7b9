//! The write-ahead log: numbered segment files of checksummed records, group commit, replay.
//!
//! A segment is `wal-<seq>.log`: an 8-byte magic header, then records framed as
//! `len: u32 LE | crc32: u32 LE | payload`. A record is acknowledged only after the group
//! it belongs to has been written (and, with [`WalSync::Always`], fsynced). Replay stops at
//! the first bad frame of a segment: in the newest segment that is a torn write and the
//! file is cut back to its last good record; in an older one it is corruption, counted
//! and logged, and replay goes on with the next segment.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

const MAGIC: &[u8; 8] = b"FSWAL01\n";
const FRAME_HEADER: usize = 8;
/// A frame claiming more than this is corrupt: no request is this large.
const MAX_RECORD_BYTES: u32 = 1 << 30;
/// Slices per `writev`: Linux refuses more than `IOV_MAX` (1024).
const MAX_IO_SLICES: usize = 1024;

/// When the log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalSync {
    /// fsync (fdatasync) every group commit before acknowledging: survives power loss.
    #[default]
    Always,
    /// write(2) before acknowledging, fsync only when a segment is sealed: survives a killed
    /// process, not a power cut (the Prometheus and Loki default).
    Never,
}

impl std::str::FromStr for WalSync {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => Err(format!(
                "wal sync policy `{text}` is unknown; use `always` or `never`"
            )),
        }
    }
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub segments: usize,
    pub records: usize,
    /// Bytes cut from the end of the newest segment (a torn last write).
    pub truncated_bytes: u64,
    /// Segments other than the newest whose tail was unreadable.
    pub corrupt_segments: usize,
    /// Highest segment number seen, 0 when the log was empty.
    pub last_seq: u64,
}

/// The open log, owned by the single writer thread.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    sync: WalSync,
    file: File,
    seq: u64,
    /// Length of the file up to the last successful commit; a failed write is cut back here.
    committed_len: u64,
    /// Records of the next group, written as they are by one vectored write (copying them
    /// into one buffer first cost the writer thread a tenth of its time).
    pending: Vec<Pending>,
}

/// One buffered record: its frame header, then a payload of a short tag and a body that may
/// be shared with the request it came from.
#[derive(Debug)]
struct Pending {
    header: [u8; FRAME_HEADER],
    tag: &'static [u8],
    body: Bytes,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:020}.log"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Segment numbers present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// fsyncs a directory so that file creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The frame header of the record `tag` then `body`: length, then CRC32 of both.
fn frame_header(tag: &[u8], body: &[u8]) -> [u8; FRAME_HEADER] {
    let mut crc = crc32fast::Hasher::new();
    crc.update(tag);
    crc.update(body);
    let mut header = [0u8; FRAME_HEADER];
    header[..4].copy_from_slice(&((tag.len() + body.len()) as u32).to_le_bytes());
    header[4..].copy_from_slice(&crc.finalize().to_le_bytes());
    header
}

/// Reads the records of one segment, calling `on_record` for each good one. Returns the
/// offset just past the last good record and whether the segment ended cleanly.
fn read_segment(path: &Path, on_record: &mut dyn FnMut(&[u8])) -> io::Result<(u64, bool)> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    if file_len < MAGIC.len() as u64 || reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Ok((0, file_len == 0));
    }
    let mut offset = MAGIC.len() as u64;
    let mut payload = Vec::new();
    loop {
        if offset == file_len {
            return Ok((offset, true));
        }
        let mut header = [0u8; FRAME_HEADER];
        if reader.read_exact(&mut header).is_err() {
            return Ok((offset, false));
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD_BYTES || offset + FRAME_HEADER as u64 + len as u64 > file_len {
            return Ok((offset, false));
        }
        payload.resize(len as usize, 0);
        if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            return Ok((offset, false));
        }
        on_record(&payload);
        offset += FRAME_HEADER as u64 + len as u64;
    }
}

/// Replays every segment numbered above `after_seq`, oldest first, and deletes the ones at
/// or below it (their records are already in Parquet). The newest segment's torn tail is cut.
pub fn replay(
    dir: &Path,
    after_seq: u64,
    on_record: &mut dyn FnMut(&[u8]),
) -> io::Result<ReplayReport> {
    fs::create_dir_all(dir)?;
    let seqs = list_segments(dir)?;
    let mut report = ReplayReport {
        last_seq: seqs.last().copied().unwrap_or(0).max(after_seq),
        ..ReplayReport::default()
    };
    let newest = seqs.last().copied();
    for seq in seqs {
        let path = segment_path(dir, seq);
        if seq <= after_seq {
            fs::remove_file(&path)?;
            continue;
        }
        report.segments += 1;
        let mut count = 0;
        let (good_len, clean) = read_segment(&path, &mut |record| {
            count += 1;
            on_record(record);
        })?;
        report.records += count;
        if clean {
            continue;
        }
        if Some(seq) == newest {
            let file = OpenOptions::new().write(true).open(&path)?;
            let len = file.metadata()?.len();
            report.truncated_bytes = len - good_len;
            if good_len < MAGIC.len() as u64 {
                drop(file);
                fs::remove_file(&path)?;
            } else {
                file.set_len(good_len)?;
                file.sync_all()?;
            }
            tracing::warn!(
                segment = seq,
                cut_bytes = report.truncated_bytes,
                "wal: cut a torn write from the newest segment"
            );
        } else {
            report.corrupt_segments += 1;
            tracing::error!(
                segment = seq,
                offset = good_len,
                "wal: segment is corrupt after this offset; records past it are lost"
            );
        }
    }
    sync_dir(dir)?;
    Ok(report)
}

impl Wal {
    /// Opens a fresh segment numbered `seq` (one past anything replayed).
    pub fn create(dir: &Path, seq: u64, sync: WalSync) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let file = Self::new_segment(dir, seq)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            sync,
            file,
            seq,
            committed_len: MAGIC.len() as u64,
            pending: Vec::new(),
        })
    }

    fn new_segment(dir: &Path, seq: u64) -> io::Result<File> {
        let path = segment_path(dir, seq);
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        let written = file
            .write_all(MAGIC)
            .and_then(|()| file.sync_all())
            .and_then(|()| sync_dir(dir));
        if let Err(error) = written {
            // A full disk lets the file be created but not written: remove it, or every later
            // attempt at this number would fail with "file exists" long after space returns.
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        Ok(file)
    }

    /// The segment currently written to.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Buffers a copy of one record; it is written by the next [`Wal::commit`].
    pub fn append(&mut self, payload: &[u8]) {
        self.append_owned(payload.to_vec());
    }

    /// Buffers one record without copying it; it is written, then dropped, by the next
    /// [`Wal::commit`].
    pub fn append_owned(&mut self, payload: Vec<u8>) {
        self.append_tagged(&[], Bytes::from(payload));
    }

    /// Buffers the record `tag` followed by `body` (replay sees them as one payload) without
    /// copying either: the body of a request can be logged as it arrived.
    pub fn append_tagged(&mut self, tag: &'static [u8], body: Bytes) {
        self.pending.push(Pending {
            header: frame_header(tag, &body),
            tag,
            body,
        });
    }

    /// Writes the buffered records in one write and syncs per policy. On failure the file is
    /// cut back to the last commit, so a failed group never leaves a bad frame in the middle.
    pub fn commit(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.write_pending();
        self.pending.clear();
        match result {
            Ok(()) => {
                self.committed_len = self.file.stream_position()?;
                Ok(())
            }
            Err(error) => {
                let committed = self.committed_len;
                if self
                    .file
                    .set_len(committed)
                    .and_then(|()| self.file.seek(SeekFrom::Start(committed)))
                    .is_err()
                {
                    // The file can no longer be trusted to end at a frame boundary: start a new
                    // segment so that later records do not follow a torn one.
                    let next = self.seq + 1;
                    if let Ok(file) = Self::new_segment(&self.dir, next) {
                        self.file = file;
                        self.seq = next;
                        self.committed_len = MAGIC.len() as u64;
                    }
                }
                Err(error)
            }
        }
    }

    fn write_pending(&mut self) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = self
            .pending
            .iter()
            .flat_map(|record| {
                [
                    IoSlice::new(&record.header),
                    IoSlice::new(record.tag),
                    IoSlice::new(&record.body),
                ]
            })
            .filter(|slice| !slice.is_empty())
            .collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let batch = rest.len().min(MAX_IO_SLICES);
            let written = self.file.write_vectored(&rest[..batch])?;
            if written == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the write-ahead log took no bytes",
                ));
            }
            IoSlice::advance_slices(&mut rest, written);
        }
        if self.sync == WalSync::Always {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Seals the current segment (fsynced whatever the policy) and starts the next one.
    /// Returns the number of the sealed segment: every record acknowledged so far is in it
    /// or in an older one.
    pub fn rotate(&mut self) -> io::Result<u64> {
        self.commit()?;
        self.file.sync_all()?;
        let sealed = self.seq;
        self.file = Self::new_segment(&self.dir, sealed + 1)?;
        self.seq = sealed + 1;
        self.committed_len = MAGIC.len() as u64;
        Ok(sealed)
    }
}

/// Deletes segments numbered at or below `seq`: their records are durable in Parquet.
pub fn remove_through(dir: &Path, seq: u64) -> io::Result<()> {
    for old in list_segments(dir)? {
        if old <= seq {
            fs::remove_file(segment_path(dir, old))?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(dir: &Path, after: u64) -> (Vec<Vec<u8>>, ReplayReport) {
        let mut records = Vec::new();
        let report = replay(dir, after, &mut |r| records.push(r.to_vec())).expect("replay");
        (records, report)
    }

    fn write_records(dir: &Path, seq: u64, records: &[Vec<u8>]) -> Vec<u64> {
        let mut wal = Wal::create(dir, seq, WalSync::Always).expect("create");
        let mut ends = Vec::new();
        for record in records {
            wal.append(record);
            wal.commit().expect("commit");
            ends.push(wal.committed_len);
        }
        ends
    }

    #[test]
    fn a_group_of_more_records_than_one_write_takes_comes_back_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::create(dir.path(), 1, WalSync::Always).expect("create");
        // Two or three slices a record: 700 records need more than one writev. Every third
        // record is a tag and a shared body, which replay must see as one payload.
        let bodies: Vec<Vec<u8>> = (0..700u32)
            .map(|i| i.to_le_bytes().repeat(1 + i as usize % 5))
            .collect();
        let mut written = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            if i % 3 == 0 {
                wal.append_tagged(b"TAG:", Bytes::from(body.clone()));
                written.push([&b"TAG:"[..], body].concat());
            } else {
                wal.append_owned(body.clone());
                written.push(body.clone());
            }
        }
        wal.commit().expect("commit");
        let expected_len: usize = written.iter().map(|r| FRAME_HEADER + r.len()).sum();
        assert_eq!(wal.committed_len, (MAGIC.len() + expected_len) as u64);
        drop(wal);
        let (records, report) = collect(dir.path(), 0);
        assert_eq!(records, written);
        assert_eq!(report.records, 700);
    }

    #[test]
    fn records_come_back_in_order_across_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::create(dir.path(), 1, WalSync::Never).expect("create");
        wal.append(b"one");
        wal.append(b"two");
        wal.commit().expect("commit");
        assert_eq!(wal.rotate().expect("rotate"), 1);
        wal.append(b"three");
        wal.commit().expect("commit");
        drop(wal);
        let (records, report) = collect(dir.path(), 0);
        assert_eq!(
            records,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(
            (report.segments, report.last_seq, report.truncated_bytes),
            (2, 2, 0)
        );
    }

    #[test]
    fn segments_already_in_parquet_are_deleted_not_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::create(dir.path(), 1, WalSync::Never).expect("create");
        wal.append(b"flushed");
        wal.rotate().expect("rotate");
        wal.append(b"not yet");
        wal.commit().expect("commit");
        drop(wal);
        let (records, _) = collect(dir.path(), 1);
        assert_eq!(records, vec![b"not yet".to_vec()]);
        assert_eq!(list_segments(dir.path()).expect("list"), vec![2]);
    }

    #[test]
    fn a_corrupt_middle_segment_keeps_later_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::create(dir.path(), 1, WalSync::Never).expect("create");
        wal.append(b"aaaa");
        wal.append(b"bbbb");
        wal.rotate().expect("rotate");
        wal.append(b"cccc");
        wal.commit().expect("commit");
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff; // flip a byte of "bbbb"
        fs::write(&path, bytes).expect("write");
        let (records, report) = collect(dir.path(), 0);
        assert_eq!(records, vec![b"aaaa".to_vec(), b"cccc".to_vec()]);
        assert_eq!(report.corrupt_segments, 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Cutting the newest segment at any byte gives back exactly the records that were
        /// completely written before the cut, and the log accepts new records afterwards.
        #[test]
        fn replay_after_truncation_at_any_offset_returns_every_complete_record(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20),
            cut_fraction in 0.0f64..=1.0,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let ends = write_records(dir.path(), 7, &records);
            let path = segment_path(dir.path(), 7);
            let full_len = fs::metadata(&path).expect("meta").len();
            let cut = (full_len as f64 * cut_fraction) as u64;
            OpenOptions::new().write(true).open(&path).expect("open").set_len(cut).expect("cut");

            let complete = ends.iter().filter(|end| **end <= cut).count();
            let (replayed, report) = collect(dir.path(), 0);
            prop_assert_eq!(&replayed[..], &records[..complete]);
            prop_assert_eq!(report.last_seq, 7);

            // The cut segment is clean again: a second replay agrees, and a new segment works.
            let (again, _) = collect(dir.path(), 0);
            prop_assert_eq!(again.len(), complete);
            let mut wal = Wal::create(dir.path(), report.last_seq + 1, WalSync::Never).expect("create");
            wal.append(b"after");
            wal.commit().expect("commit");
            drop(wal);
            let (after, _) = collect(dir.path(), 0);
            prop_assert_eq!(after.last().map(Vec::as_slice), Some(&b"after"[..]));
        }
    }
}

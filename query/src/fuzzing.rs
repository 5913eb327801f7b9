//! The invariants the `wal_replay` and `sql` fuzz targets in `fuzz/` check on every input,
//! here so that the committed corpus is replayed through the very same checks on the stable
//! toolchain (`tests/fuzz_corpus.rs`). Each check panics when replay or the sandbox breaks
//! an invariant. Not for other use.

use std::path::Path;

use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use flowscope_model::SpanBatchBuilder;
use flowscope_model::schema::{EventRecord, LinkRecord, SpanRecord};

use crate::store::wal::{self, Wal, WalSync};
use crate::store::{decode_batches, encode_batch};

/// The segment a WAL input becomes: number 1, the first segment of a fresh log.
pub const SEGMENT_SEQ: u64 = 1;
/// `wal.rs`'s segment header, repeated here so that the reference reader below is not the
/// code under test.
const MAGIC: &[u8; 8] = b"FSWAL01\n";
const FRAME_HEADER: usize = 8;
const MAX_RECORD_BYTES: usize = 1 << 30;

/// A span batch like the collector makes: one trace of `spans` spans, a root in `checkout`
/// calling the rest in two other services, with attributes, an event and a link, so every
/// nested column of the storage schema holds data and the graph has edges.
pub fn sample_batch(spans: usize, seed: u8) -> RecordBatch {
    let mut builder = SpanBatchBuilder::with_capacity(spans);
    let trace = [
        seed, 0x5b, 0x8e, 0xff, 0xf7, 0x98, 3, 0x81, 3, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6,
    ];
    let parent = [seed, 0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1];
    for i in 0..spans {
        let mut span = parent;
        if i > 0 {
            span[7] = i as u8;
        }
        let start = 1_544_712_660_000_000_000 + i as i64 * 1_000_000;
        let record = SpanRecord {
            trace_id: &trace,
            span_id: &span,
            parent_span_id: (i > 0).then_some(&parent[..]),
            name: "GET /items/{id}",
            kind: ["SERVER", "CLIENT", "PRODUCER", "CONSUMER", "INTERNAL"][i % 5],
            service_name: ["checkout", "payments", "inventory"][usize::from(i > 0) + i % 2],
            start_time_unix_nano: start,
            end_time_unix_nano: start + 5_000_000,
            status_code: ["UNSET", "OK", "ERROR"][i % 3],
            scope_name: "fuzz",
            ..SpanRecord::default()
        };
        let events = [EventRecord {
            time_unix_nano: start + 1_000,
            name: "cache miss".into(),
            attributes: vec![("retry".into(), i.to_string())],
        }];
        let links = [LinkRecord {
            trace_id: "5b8efff798038103d269b633813fc60c".into(),
            span_id: "eee19b7ec3c1b174".into(),
            trace_state: String::new(),
            attributes: Vec::new(),
        }];
        if let Err(error) = builder.append(
            &record,
            &[("http.route", "/items/{id}")],
            &[("service.name", "checkout")],
            &events,
            &links,
        ) {
            panic!("the sample span is valid: {error}");
        }
    }
    match builder.finish() {
        Ok(batch) => batch,
        Err(error) => panic!("the sample batch builds: {error}"),
    }
}

/// WAL record payloads as the store writes them: batches of 1, 3 and 8 spans.
pub fn sample_payloads() -> Vec<Vec<u8>> {
    [1, 3, 8]
        .into_iter()
        .enumerate()
        .map(
            |(seed, spans)| match encode_batch(&sample_batch(spans, seed as u8)) {
                Ok(payload) => payload,
                Err(error) => panic!("a sample batch encodes: {error}"),
            },
        )
        .collect()
}

/// One WAL input through replay, in the empty directory `dir`. The first byte picks what the
/// rest of the input is:
/// - `% 3 == 0`: the whole segment file;
/// - `% 3 == 1`: good records of `payloads` written by the real [`Wal`], then damage the
///   rest describes (cuts, flipped bytes, garbage appended);
/// - `% 3 == 2`: one good record, then one of `payloads` (picked by the next byte) damaged
///   as the rest describes, with a correct frame and checksum, so that the record decoder
///   sees broken Arrow IPC (behind a checksum the fuzzer would otherwise never match).
///
/// Always: no panic; replay returns exactly the frames a reference reader finds before the
/// first bad one (a prefix of valid records, nothing invented), and cuts the file to them;
/// every record either decodes into valid batches of the storage schema or is refused, as
/// `SpanStore::open` skips it; a second replay agrees and cuts nothing; the log takes new
/// records after it. Structured inputs also check that every record written wholly before
/// the first damaged byte comes back unchanged.
pub fn check_wal_replay(dir: &Path, input: &[u8], payloads: &[Vec<u8>]) {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let path = dir.join(format!("wal-{SEGMENT_SEQ:020}.log"));
    let mut intact = None;
    let mut framed = None;
    match mode % 3 {
        0 => write(&path, rest),
        1 => intact = Some(structured(dir, &path, rest, payloads)),
        _ => {
            let first = payloads.first().cloned().unwrap_or_default();
            let (pick, ops) = match rest.split_first() {
                Some((&pick, ops)) => (usize::from(pick), ops),
                None => (0, &[][..]),
            };
            let mut payload = match payloads.len() {
                0 => Vec::new(),
                n => payloads[pick % n].clone(),
            };
            damage(&mut payload, ops);
            let mut log = create(dir, SEGMENT_SEQ);
            log.append(&first);
            log.append(&payload);
            commit(&mut log);
            framed = Some(payload);
        }
    }
    let before = read(&path);
    let reference = reference_frames(&before);

    let (records, report) = replay(dir);
    assert_eq!(report.records, records.len());
    assert_eq!(report.last_seq, SEGMENT_SEQ);
    assert!(
        records == reference.records,
        "replay returned other records than the segment holds before its first bad frame"
    );
    match (reference.clean, reference.good_len) {
        (true, _) => assert!(read(&path) == before, "replay changed a clean segment"),
        (false, good) if good < MAGIC.len() => {
            assert!(!path.exists(), "a segment without one good header was kept");
        }
        (false, good) => {
            assert!(
                read(&path) == before[..good],
                "replay did not cut the torn tail"
            )
        }
    }
    assert_eq!(
        report.truncated_bytes,
        (before.len() - reference.good_len) as u64 * u64::from(!reference.clean)
    );
    for record in &records {
        check_decodes(record);
    }
    if let Some((written, first_damage)) = intact {
        // A frame wholly before the first damaged byte is intact: it must come back as written.
        let mut end = MAGIC.len();
        let mut whole = 0;
        for record in &written {
            end += FRAME_HEADER + record.len();
            if end > first_damage {
                break;
            }
            whole += 1;
        }
        if first_damage >= MAGIC.len() {
            assert!(records.len() >= whole, "replay lost an intact record");
            assert!(
                records[..whole] == written[..whole],
                "replay changed an intact record"
            );
            for record in &records[..whole] {
                assert!(
                    check_decodes(record).is_some(),
                    "an intact record does not decode"
                );
            }
        }
    }
    if let Some(payload) = framed {
        assert!(
            records.len() == 2 && records[1] == payload,
            "replay lost a record with a good frame and checksum"
        );
    }

    // The torn tail is gone: replaying again reads the same records and cuts nothing.
    let (again, second) = replay(dir);
    assert!(again == records, "a second replay read other records");
    assert_eq!(second.truncated_bytes, 0);

    // And the log goes on: a new segment's record follows the old ones.
    let mut log = create(dir, report.last_seq + 1);
    log.append(b"after");
    commit(&mut log);
    drop(log);
    let (after, _) = replay(dir);
    assert_eq!(after.len(), records.len() + 1);
    assert_eq!(after.last().map(Vec::as_slice), Some(&b"after"[..]));
}

/// What the store keeps of a record: its batches, each valid and in the storage schema, or
/// nothing when it is refused.
pub fn check_decodes(record: &[u8]) -> Option<Vec<RecordBatch>> {
    let batches = decode_batches(record).ok()?;
    for batch in &batches {
        assert_eq!(batch.schema(), flowscope_model::storage_schema());
        for column in batch.columns() {
            if let Err(error) = column.to_data().validate_full() {
                panic!("a replayed record holds an invalid Arrow column: {error}");
            }
        }
    }
    Some(batches)
}

/// The frames of a segment file up to the first bad one, read from memory by the format in
/// `wal.rs`'s documentation.
struct Reference {
    records: Vec<Vec<u8>>,
    /// Bytes up to the end of the last good frame (0 without a good header).
    good_len: usize,
    /// The file ends exactly after a good frame (or is empty).
    clean: bool,
}

fn reference_frames(bytes: &[u8]) -> Reference {
    let mut reference = Reference {
        records: Vec::new(),
        good_len: 0,
        clean: bytes.is_empty(),
    };
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC[..] {
        return reference;
    }
    let mut offset = MAGIC.len();
    loop {
        reference.good_len = offset;
        let rest = &bytes[offset..];
        if rest.is_empty() {
            reference.clean = true;
            return reference;
        }
        let Some((header, rest)) = rest.split_at_checked(FRAME_HEADER) else {
            return reference;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = rest.get(..len).filter(|_| len <= MAX_RECORD_BYTES) else {
            return reference;
        };
        if crc32fast::hash(payload) != crc {
            return reference;
        }
        reference.records.push(payload.to_vec());
        offset += FRAME_HEADER + len;
    }
}

/// Writes `payloads` (as many as the first byte of `ops` says) with the real writer, then
/// damages the file as the rest of `ops` says. Returns the records written and the offset
/// of the first damaged byte.
fn structured(dir: &Path, path: &Path, ops: &[u8], payloads: &[Vec<u8>]) -> (Vec<Vec<u8>>, usize) {
    let count = ops.first().map_or(1, |b| usize::from(b % 6) + 1);
    let written: Vec<Vec<u8>> = if payloads.is_empty() {
        Vec::new()
    } else {
        (0..count)
            .map(|i| payloads[i % payloads.len()].clone())
            .collect()
    };
    let mut log = create(dir, SEGMENT_SEQ);
    for record in &written {
        log.append(record);
        commit(&mut log);
    }
    drop(log);
    let mut file = read(path);
    let first_damage = damage(&mut file, ops.get(1..).unwrap_or_default());
    write(path, &file);
    (written, first_damage)
}

/// Changes `bytes` as `ops` says, a sequence of (op, u32 offset LE, ...): `op % 3 == 0` cuts
/// at the offset, `1` XORs the byte at the offset with the next input byte, `2` appends the
/// next `offset % 64` input bytes. Returns the offset of the first changed byte.
fn damage(bytes: &mut Vec<u8>, mut ops: &[u8]) -> usize {
    let mut first_damage = bytes.len();
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        let at = take_u32(&mut ops) as usize;
        match op % 3 {
            0 => {
                let cut = at % (bytes.len() + 1);
                bytes.truncate(cut);
                first_damage = first_damage.min(cut);
            }
            1 => {
                let Some((&mask, rest)) = ops.split_first() else {
                    break;
                };
                ops = rest;
                if !bytes.is_empty() && mask != 0 {
                    let at = at % bytes.len();
                    bytes[at] ^= mask;
                    first_damage = first_damage.min(at);
                }
            }
            _ => {
                let len = (at % 64).min(ops.len());
                first_damage = first_damage.min(bytes.len());
                bytes.extend_from_slice(&ops[..len]);
                ops = &ops[len..];
            }
        }
    }
    first_damage
}

/// Little-endian u32 from up to four bytes.
fn take_u32(bytes: &mut &[u8]) -> u32 {
    let (head, rest) = bytes.split_at(bytes.len().min(4));
    *bytes = rest;
    head.iter()
        .rev()
        .fold(0u32, |acc, byte| (acc << 8) | u32::from(*byte))
}

fn replay(dir: &Path) -> (Vec<Vec<u8>>, wal::ReplayReport) {
    let mut records = Vec::new();
    match wal::replay(dir, 0, &mut |record| records.push(record.to_vec())) {
        Ok(report) => (records, report),
        Err(error) => panic!("replay of a readable directory failed: {error}"),
    }
}

fn create(dir: &Path, seq: u64) -> Wal {
    match Wal::create(dir, seq, WalSync::Never) {
        Ok(log) => log,
        Err(error) => panic!("cannot create a WAL segment: {error}"),
    }
}

fn commit(log: &mut Wal) {
    if let Err(error) = log.commit() {
        panic!("cannot commit to the WAL: {error}");
    }
}

fn read(path: &Path) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => panic!("cannot read {}: {error}", path.display()),
    }
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(error) = std::fs::write(path, bytes) {
        panic!("cannot write {}: {error}", path.display());
    }
}

/// What a query may scan: the tables and table functions flowscope registers.
pub const SQL_TABLES: &[&str] = &[
    "spans",
    "nodes",
    "edges",
    "feedback_loops",
    "nodes_between",
    "edges_between",
    "feedback_loops_between",
    "edge_series",
    "node_series",
    "edge_control",
    "node_control",
    "edge_anomalies",
    "node_anomalies",
    "edge_seasonal",
    "node_seasonal",
    "topology_events",
    "blast_radius",
    "dependencies",
    "paths",
    "nodes_grouped",
    "edges_grouped",
    "generate_series",
    "range",
];

/// Panics unless every node of `plan` (subqueries included) only reads: no DDL, DML, COPY
/// or statement (SET, PREPARE, transactions), and every scan is of a table or table
/// function flowscope registers, or of `information_schema`.
pub fn assert_read_only(plan: &LogicalPlan, sql: &str) {
    let visited = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Dml(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_) => {
                panic!("the sandbox accepted a {} plan for {sql:?}", node.display())
            }
            LogicalPlan::TableScan(scan) => {
                let name = &scan.table_name;
                let table = name.table().trim_end_matches("()");
                let allowed = match name.schema() {
                    Some("information_schema") => true,
                    None | Some("public") => SQL_TABLES.contains(&table),
                    Some(_) => false,
                } && name.catalog().is_none_or(|catalog| catalog == "flowscope");
                assert!(allowed, "the sandbox let {sql:?} scan {name}");
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    assert!(visited.is_ok(), "the plan visitor never fails");
}

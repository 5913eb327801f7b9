//! Writes the seed corpus under `fuzz/corpus/<target>/` with the project's own encoders:
//! the demo's simulated traces as OTLP protobuf and JSON (`flowscope_demo::send::Target`),
//! real WAL segments written by `query::wal::Wal` with the store's record encoding, and the
//! SQL examples of README.md plus statements the sandbox must refuse.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds` (stable is enough). Output is
//! deterministic: the same sources give the same files, so a diff shows what changed.

use std::fs;
use std::path::{Path, PathBuf};

use flowscope_demo::send::{Encoding, Protocol, Target};
use flowscope_demo::{Simulator, Topology};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

/// The simulated clock: 2026-01-01T00:00:00Z, so that the corpus does not change daily.
const NOW_NS: i64 = 1_767_225_600_000_000_000;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let requests = requests()?;
    otlp(&root.join("otlp_protobuf"), &requests, Encoding::Protobuf)?;
    otlp(&root.join("otlp_json"), &requests, Encoding::Json)?;
    wal(&root.join("wal_replay"), &requests)?;
    sql(&root.join("sql"))?;
    Ok(())
}

/// Named requests: the demo's traces of every preset at a few sizes, and hand-made ones for
/// what the demo never sends (rejected spans, every attribute value type, nesting).
fn requests() -> Result<Vec<(String, ExportTraceServiceRequest)>> {
    let mut requests = Vec::new();
    // Small requests keep the fuzzer's inputs short (libFuzzer's length limit grows to the
    // largest seed): one or two traces, from a few simulator seeds.
    for preset in Topology::preset_names() {
        for seed in [7, 8, 9] {
            let mut simulator = Simulator::new(Topology::preset(preset)?, seed);
            let traces = if preset == "shop" { 2 } else { 1 };
            let request = simulator.request(NOW_NS, traces);
            requests.push((format!("demo-{preset}-seed-{seed}"), request));
        }
    }
    requests.push(("empty".into(), ExportTraceServiceRequest::default()));
    requests.push(("value-types".into(), one_span(value_types())));
    let mut invalid = vec![span(1), span(2), span(3), span(4)];
    invalid[0].trace_id = vec![0; 16]; // all-zero trace id
    invalid[1].span_id = vec![1; 4]; // short span id
    invalid[2].end_time_unix_nano = 1; // ends before it starts
    requests.push(("rejected-spans".into(), request_with(invalid)));
    let mut nested = AnyValue {
        value: Some(Value::StringValue("leaf".into())),
    };
    for depth in 0..40 {
        nested = AnyValue {
            value: Some(if depth % 2 == 0 {
                Value::ArrayValue(ArrayValue {
                    values: vec![nested],
                })
            } else {
                Value::KvlistValue(KeyValueList {
                    values: vec![key_value("k", nested)],
                })
            }),
        };
    }
    let mut deep = span(5);
    deep.attributes.push(key_value("deep", nested));
    requests.push(("nested-40-deep".into(), request_with(vec![deep])));
    Ok(requests)
}

fn otlp(
    dir: &Path,
    requests: &[(String, ExportTraceServiceRequest)],
    encoding: Encoding,
) -> Result<()> {
    let dir = fresh(dir)?;
    let mut target = Target::new(Protocol::Http, "http://127.0.0.1:4318");
    target.encoding = encoding;
    let extension = match encoding {
        Encoding::Protobuf => "pb",
        Encoding::Json => "json",
    };
    for (name, request) in requests {
        fs::write(
            dir.join(format!("{name}.{extension}")),
            &target.encode(request)?.body,
        )?;
    }
    Ok(())
}

/// WAL seeds in the `wal_replay` input format (`flowscope_query::fuzzing::check_wal_replay`):
/// a mode byte, then a whole segment (mode 0), damage to good records (1), or damage to one
/// record's payload behind a good checksum (2). The segments hold what the store writes for
/// the demo's requests.
fn wal(dir: &Path, requests: &[(String, ExportTraceServiceRequest)]) -> Result<()> {
    use flowscope_query::store::encode_batch;
    use flowscope_query::store::wal::{Wal, WalSync};

    let dir = fresh(dir)?;
    let mut payloads = Vec::new();
    for (name, request) in requests.iter().filter(|(name, _)| {
        ["demo-shop-seed-7", "value-types", "rejected-spans"].contains(&name.as_str())
    }) {
        let decoded = flowscope_collector::convert(request.clone());
        let batch = decoded.batch.ok_or(format!("{name} has no valid spans"))?;
        payloads.push((name.clone(), encode_batch(&batch)?));
    }
    let scratch = tempfile::tempdir()?;
    let segment = scratch.path().join("wal-00000000000000000001.log");
    let mut log = Wal::create(scratch.path(), 1, WalSync::Never)?;
    fs::write(
        dir.join("segment-empty"),
        with_mode(0, &fs::read(&segment)?),
    )?;
    for (_, payload) in &payloads {
        log.append(payload);
        log.commit()?;
    }
    drop(log);
    let whole = fs::read(&segment)?;
    fs::write(dir.join("segment-demo"), with_mode(0, &whole))?;
    fs::write(
        dir.join("segment-torn-tail"),
        with_mode(0, &whole[..whole.len() - 100]),
    )?;
    let mut flipped = whole.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    fs::write(dir.join("segment-flipped-byte"), with_mode(0, &flipped))?;
    fs::write(
        dir.join("segment-bad-magic"),
        with_mode(0, b"FSWAL02\nrest"),
    )?;
    // Mode 1: the first byte after the mode is how many records, then ops of
    // (op, u32 offset LE[, mask | bytes]): 0 cut, 1 flip, 2 append.
    fs::write(dir.join("damage-none"), [1, 5])?;
    fs::write(dir.join("damage-cut"), [1, 3, 0, 0x90, 0x01, 0, 0])?;
    fs::write(dir.join("damage-flip"), [1, 2, 1, 0x20, 0, 0, 0, 0x01])?;
    fs::write(
        dir.join("damage-append"),
        [1, 1, 2, 8, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4],
    )?;
    // Mode 2: which sample payload, then ops as above on the payload, which is framed with
    // a correct checksum.
    fs::write(dir.join("record-intact"), [2, 0])?;
    fs::write(dir.join("record-cut"), [2, 1, 0, 0xc8, 0, 0, 0])?;
    fs::write(
        dir.join("record-flip-schema"),
        [2, 2, 1, 0x40, 0, 0, 0, 0x10],
    )?;
    fs::write(
        dir.join("record-flip-body"),
        [2, 2, 1, 0x00, 0x04, 0, 0, 0x80],
    )?;
    fs::write(
        dir.join("record-garbage"),
        [
            2, 0, 0, 0, 0, 0, 0, 2, 12, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0, 0, 0, 0, 0,
        ],
    )?;
    Ok(())
}

/// README.md's SQL examples (every statement of its ```sql blocks), and statements the
/// sandbox must refuse: writes, settings, files, other catalogs.
fn sql(dir: &Path) -> Result<()> {
    let dir = fresh(dir)?;
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))?;
    let mut statements = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in readme.lines() {
        match (in_block, line.trim_start().starts_with("```")) {
            (false, true) => in_block = line.trim() == "```sql",
            (true, true) => in_block = false,
            (true, false) if !line.trim_start().starts_with("--") => {
                current.push_str(line);
                current.push('\n');
                if line.trim_end().ends_with(';') {
                    statements.push(std::mem::take(&mut current));
                }
            }
            _ => {}
        }
    }
    for (index, statement) in statements.iter().enumerate() {
        fs::write(dir.join(format!("readme-{index:02}.sql")), statement.trim())?;
    }
    let refused = [
        ("create-table", "CREATE TABLE t AS SELECT * FROM spans"),
        (
            "create-external",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        ),
        ("insert", "INSERT INTO spans SELECT * FROM spans"),
        ("copy", "COPY (SELECT * FROM spans) TO '/tmp/out.parquet'"),
        ("set", "SET datafusion.execution.batch_size = 1"),
        ("file-table", "SELECT * FROM '/etc/passwd'"),
        ("read-csv", "SELECT * FROM read_csv('/etc/passwd')"),
        ("other-catalog", "SELECT * FROM datafusion.public.spans"),
        ("explain-insert", "EXPLAIN INSERT INTO spans VALUES (1)"),
        (
            "prepare",
            "PREPARE p AS SELECT * FROM spans WHERE name = $1",
        ),
    ];
    for (name, statement) in refused {
        fs::write(dir.join(format!("refused-{name}.sql")), statement)?;
    }
    let read = [
        (
            "information-schema",
            "SELECT table_catalog, table_schema, table_name FROM information_schema.tables",
        ),
        ("show", "SHOW COLUMNS FROM spans"),
        (
            "explain-analyze",
            "EXPLAIN ANALYZE SELECT count(*) FROM spans WHERE attributes['http.route'] = '/items/{id}'",
        ),
        (
            "subqueries",
            "SELECT * FROM (SELECT service_name FROM spans UNION ALL SELECT source FROM edges) WHERE service_name IN (SELECT id FROM nodes)",
        ),
        (
            "root-spans",
            "SELECT trace_id, span_id FROM spans WHERE parent_span_id IS NULL LIMIT 3",
        ),
        (
            "window",
            "SELECT name, row_number() OVER (PARTITION BY service_name ORDER BY start_time) FROM spans",
        ),
        (
            "series",
            "SELECT * FROM generate_series(1, 10) CROSS JOIN range(3)",
        ),
        ("events", "SELECT unnest(events) FROM spans"),
    ];
    for (name, statement) in read {
        fs::write(dir.join(format!("read-{name}.sql")), statement)?;
    }
    Ok(())
}

fn with_mode(mode: u8, rest: &[u8]) -> Vec<u8> {
    let mut input = vec![mode];
    input.extend_from_slice(rest);
    input
}

/// `dir`, emptied of earlier seeds; the inputs that once broke something (`crash-*`,
/// `found-*`) stay.
fn fresh(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("crash-") || name.starts_with("found-")) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(dir.to_path_buf())
}

fn key_value(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..KeyValue::default()
    }
}

fn value_types() -> Span {
    let value = |value| AnyValue { value: Some(value) };
    let mut span = span(9);
    span.attributes = vec![
        key_value("string", value(Value::StringValue("s".into()))),
        key_value("bool", value(Value::BoolValue(true))),
        key_value("int", value(Value::IntValue(-42))),
        key_value("double", value(Value::DoubleValue(-0.5))),
        key_value("bytes", value(Value::BytesValue(vec![0, 1, 0xff]))),
        key_value(
            "array",
            value(Value::ArrayValue(ArrayValue {
                values: vec![
                    value(Value::IntValue(1)),
                    value(Value::StringValue("two".into())),
                ],
            })),
        ),
        key_value(
            "kvlist",
            value(Value::KvlistValue(KeyValueList {
                values: vec![key_value("inner", value(Value::BoolValue(false)))],
            })),
        ),
        KeyValue {
            key: "empty".into(),
            value: None,
            ..KeyValue::default()
        },
    ];
    span.events.push(span::Event {
        time_unix_nano: span.start_time_unix_nano as u64 + 10,
        name: "event".into(),
        attributes: vec![key_value("e", value(Value::StringValue("v".into())))],
        ..span::Event::default()
    });
    span.links.push(span::Link {
        trace_id: vec![0xab; 16],
        span_id: vec![0xcd; 8],
        trace_state: "k=v".into(),
        ..span::Link::default()
    });
    span
}

fn span(id: u8) -> Span {
    Span {
        trace_id: vec![0x5b; 16],
        span_id: vec![id; 8],
        name: format!("span {id}"),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: NOW_NS as u64,
        end_time_unix_nano: NOW_NS as u64 + 1_000_000,
        status: Some(Status {
            code: 1,
            ..Status::default()
        }),
        ..Span::default()
    }
}

fn one_span(span: Span) -> ExportTraceServiceRequest {
    request_with(vec![span])
}

fn request_with(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![key_value(
                    "service.name",
                    AnyValue {
                        value: Some(Value::StringValue("checkout".into())),
                    },
                )],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

//! Test helpers shared by the decode, HTTP and gRPC tests: request builders, a recording
//! sink and readers for the columns of a span batch.

use std::sync::Mutex;

use arrow::array::{Array, AsArray, StructArray};
use arrow::datatypes::{Int64Type, TimestampNanosecondType, UInt32Type};
use arrow::record_batch::RecordBatch;
use futures::future::BoxFuture;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::sink::{SinkError, SpanSink};

/// A span that passes validation: trace id `[1; 16]`, span id `[id; 8]`, 1 µs long.
pub fn valid_span(id: u8) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![id; 8],
        name: format!("span {id}"),
        kind: 2,
        start_time_unix_nano: 1_000_000,
        end_time_unix_nano: 1_001_000,
        ..Span::default()
    }
}

/// One resource with one scope holding `spans`.
pub fn request_with(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

pub fn key_value(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

/// An attribute value `levels` deep, as `decode::MAX_VALUE_NESTING` counts: arrays and
/// key-value lists in turn around an integer, which is level `levels`.
pub fn nested_value(levels: usize) -> AnyValue {
    let mut value = AnyValue {
        value: Some(Value::IntValue(7)),
    };
    for level in 1..levels {
        let wrapped = if level % 2 == 0 {
            Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(value),
                    key_strindex: 0,
                }],
            })
        } else {
            Value::ArrayValue(ArrayValue {
                values: vec![value],
            })
        };
        value = AnyValue {
            value: Some(wrapped),
        };
    }
    value
}

/// What a [`TestSink`] answers to every write.
pub type Outcome = fn() -> Result<(), SinkError>;

/// Request headers as (name, value) pairs.
pub type Headers<'a> = &'a [(&'a str, &'a str)];

/// Attributes as (key, value) pairs, as stored.
pub type Attributes = Vec<(String, String)>;

/// A sink that records what it is given and answers with `outcome`.
pub struct TestSink {
    pub batches: Mutex<Vec<RecordBatch>>,
    /// The tenant of each batch in `batches`.
    pub tenants: Mutex<Vec<String>>,
    outcome: Outcome,
}

impl TestSink {
    pub fn accepting() -> Self {
        Self::answering(|| Ok(()))
    }

    pub fn answering(outcome: Outcome) -> Self {
        Self {
            batches: Mutex::new(Vec::new()),
            tenants: Mutex::new(Vec::new()),
            outcome,
        }
    }

    pub fn rows(&self) -> usize {
        self.batches
            .lock()
            .map(|batches| batches.iter().map(RecordBatch::num_rows).sum())
            .unwrap_or(0)
    }
}

impl SpanSink for TestSink {
    fn write(
        &self,
        tenant: &flowscope_auth::TenantId,
        batch: RecordBatch,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        if let Ok(mut batches) = self.batches.lock() {
            batches.push(batch);
        }
        if let Ok(mut tenants) = self.tenants.lock() {
            tenants.push(tenant.as_str().to_string());
        }
        let outcome = (self.outcome)();
        Box::pin(async move { outcome })
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a dyn Array {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_ref()
}

pub fn string_column(batch: &RecordBatch, name: &str, row: usize) -> Option<String> {
    let array = column(batch, name).as_string::<i32>();
    array.is_valid(row).then(|| array.value(row).to_string())
}

/// Checks the text columns of one row, `(column, expected)`, all in one comparison that
/// names every column that differs.
pub fn assert_strings(batch: &RecordBatch, row: usize, expected: &[(&str, &str)]) {
    let actual: Vec<(&str, Option<String>)> = expected
        .iter()
        .map(|(column, _)| (*column, string_column(batch, column, row)))
        .collect();
    let expected: Vec<(&str, Option<String>)> = expected
        .iter()
        .map(|(column, value)| (*column, Some(value.to_string())))
        .collect();
    assert_eq!(actual, expected, "row {row}");
}

pub fn binary_column(batch: &RecordBatch, name: &str, row: usize) -> Option<Vec<u8>> {
    let array = column(batch, name).as_fixed_size_binary();
    array.is_valid(row).then(|| array.value(row).to_vec())
}

pub fn u32_column(batch: &RecordBatch, name: &str, row: usize) -> u32 {
    column(batch, name).as_primitive::<UInt32Type>().value(row)
}

/// Reads an Int64 or a nanosecond timestamp column.
pub fn i64_column(batch: &RecordBatch, name: &str, row: usize) -> i64 {
    let array = column(batch, name);
    match array.as_primitive_opt::<Int64Type>() {
        Some(numbers) => numbers.value(row),
        None => array.as_primitive::<TimestampNanosecondType>().value(row),
    }
}

fn map_entries(entries: &StructArray) -> Vec<(String, String)> {
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    (0..entries.len())
        .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
        .collect()
}

pub fn map_column(batch: &RecordBatch, name: &str, row: usize) -> Vec<(String, String)> {
    map_entries(&column(batch, name).as_map().value(row))
}

/// An event as (time, name, attributes).
pub type EventRow = (i64, String, Attributes);

pub fn events_column(batch: &RecordBatch, row: usize) -> Vec<EventRow> {
    let items = column(batch, "events").as_list::<i32>().value(row);
    let items = items.as_struct();
    let times = items.column(0).as_primitive::<TimestampNanosecondType>();
    let names = items.column(1).as_string::<i32>();
    let attributes = items.column(2).as_map();
    (0..items.len())
        .map(|i| {
            let entries = map_entries(&attributes.value(i));
            (times.value(i), names.value(i).to_string(), entries)
        })
        .collect()
}

/// Links of one span as (trace_id, span_id, trace_state, attributes).
pub type LinkRow = (String, String, Option<String>, Attributes);

pub fn links_column(batch: &RecordBatch, row: usize) -> Vec<LinkRow> {
    let items = column(batch, "links").as_list::<i32>().value(row);
    let items = items.as_struct();
    let trace_ids = items.column(0).as_string::<i32>();
    let span_ids = items.column(1).as_string::<i32>();
    let states = items.column(2).as_string::<i32>();
    let attributes = items.column(3).as_map();
    (0..items.len())
        .map(|i| {
            (
                trace_ids.value(i).to_string(),
                span_ids.value(i).to_string(),
                states.is_valid(i).then(|| states.value(i).to_string()),
                map_entries(&attributes.value(i)),
            )
        })
        .collect()
}

/// Tokens for the auth tests: `acme` may ingest (`ACME_INGEST`) or only read
/// (`ACME_READ`); `globex` may ingest at 10 spans/s (`GLOBEX_INGEST`).
pub const ACME_INGEST: &str = "acme-ingest-token-0001";
pub const ACME_READ: &str = "acme-read-token-000001";
pub const GLOBEX_INGEST: &str = "globex-ingest-token-01";

pub fn two_tenants() -> flowscope_auth::Access {
    use flowscope_auth::{Access, Limits, Role, TenantId, TokenEntry};
    let tenant = |name: &str| TenantId::parse(name).expect("tenant");
    let entries = vec![
        TokenEntry::new(ACME_INGEST, tenant("acme"), Role::Ingest).expect("token"),
        TokenEntry::new(ACME_READ, tenant("acme"), Role::Read).expect("token"),
        TokenEntry::new(GLOBEX_INGEST, tenant("globex"), Role::Ingest).expect("token"),
    ];
    let limits = [(
        tenant("globex"),
        Limits {
            spans_per_second: Some(10),
            bytes_per_second: None,
        },
    )];
    Access::new(entries, limits.into_iter().collect(), Limits::default()).expect("access")
}

/// Receiver settings that check [`two_tenants`]' tokens.
pub fn config_with_tokens() -> crate::CollectorConfig {
    crate::CollectorConfig {
        access: std::sync::Arc::new(two_tenants()),
        ..crate::CollectorConfig::default()
    }
}

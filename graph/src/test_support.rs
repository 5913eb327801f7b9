//! Test helpers: spans written as one short line each, turned into a storage-schema batch
//! with the model's own `SpanBatchBuilder`.

use arrow::record_batch::RecordBatch;
use flowscope_model::schema::LinkRecord;
use flowscope_model::{SpanBatchBuilder, SpanRecord};

/// A span of trace `trace` (a one-byte id), span `id`, child of `parent`.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSpan {
    pub trace: u8,
    pub id: u8,
    pub parent: Option<u8>,
    pub kind: &'static str,
    pub service: String,
    pub start_ns: i64,
    pub duration_ns: i64,
    pub error: bool,
    pub attributes: Vec<(String, String)>,
    pub links: Vec<(String, String)>,
}

pub fn trace_id(trace: u8) -> [u8; 16] {
    let mut id = [0; 16];
    id[15] = trace;
    id[0] = 0xab;
    id
}

pub fn span_id(span: u8) -> [u8; 8] {
    let mut id = [0; 8];
    id[7] = span;
    id
}

/// Starts at 1 s and lasts 10 ms unless told otherwise.
pub fn span(trace: u8, id: u8, parent: Option<u8>, kind: &'static str, service: &str) -> TestSpan {
    TestSpan {
        trace,
        id,
        parent,
        kind,
        service: service.to_string(),
        start_ns: 1_000_000_000,
        duration_ns: 10_000_000,
        error: false,
        attributes: Vec::new(),
        links: Vec::new(),
    }
}

impl TestSpan {
    pub fn at_ms(mut self, ms: i64) -> Self {
        self.start_ns = ms * 1_000_000;
        self
    }

    pub fn lasting_ms(mut self, ms: i64) -> Self {
        self.duration_ns = ms * 1_000_000;
        self
    }

    pub fn error(mut self) -> Self {
        self.error = true;
        self
    }

    pub fn attr(mut self, key: &str, value: &str) -> Self {
        self.attributes.push((key.to_string(), value.to_string()));
        self
    }

    pub fn link(self, trace: u8, span: u8) -> Self {
        let (trace, span) = (trace_id(trace), span_id(span));
        let trace_hex: String = trace.iter().map(|b| format!("{b:02x}")).collect();
        let span_hex: String = span.iter().map(|b| format!("{b:02x}")).collect();
        self.raw_link(&trace_hex, &span_hex)
    }

    pub fn raw_link(mut self, trace_hex: &str, span_hex: &str) -> Self {
        self.links
            .push((trace_hex.to_string(), span_hex.to_string()));
        self
    }
}

pub fn batch(spans: &[TestSpan]) -> RecordBatch {
    let mut builder = SpanBatchBuilder::default();
    for span in spans {
        let trace = trace_id(span.trace);
        let id = span_id(span.id);
        let parent = span.parent.map(span_id);
        let record = SpanRecord {
            trace_id: &trace,
            span_id: &id,
            parent_span_id: parent.as_ref().map(|p| p.as_slice()),
            name: "operation",
            kind: span.kind,
            service_name: &span.service,
            start_time_unix_nano: span.start_ns,
            end_time_unix_nano: span.start_ns + span.duration_ns,
            status_code: if span.error { "ERROR" } else { "UNSET" },
            ..SpanRecord::default()
        };
        let links: Vec<LinkRecord> = span
            .links
            .iter()
            .map(|(trace_id, span_id)| LinkRecord {
                trace_id: trace_id.clone(),
                span_id: span_id.clone(),
                ..LinkRecord::default()
            })
            .collect();
        builder
            .append(
                &record,
                &span.attributes,
                &[("service.name", span.service.as_str())],
                &[],
                &links,
            )
            .expect("append test span");
    }
    builder.finish().expect("finish test batch")
}

//! What both OTLP decoders (`wire.rs` and prost with `decode::convert`) share about spans:
//! the checks `trace.proto` asks for, the reasons a span is rejected and the partial success
//! they add up to, and the names the storage schema gives kinds and status codes. Plain
//! functions over values; it depends on neither decoder, so the decoders depend on it and
//! not on each other.

use std::fmt::Write as _;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use flowscope_base::format_duration;
use flowscope_model::SpanBatchBuilder;
use flowscope_model::ids::{is_valid_span_id, is_valid_trace_id};
use flowscope_model::retention::retain_started_since;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};

use crate::CollectorError;

/// The most levels of `AnyValue` an attribute value may have (the value itself is level 1,
/// a value inside its array or key-value list level 2, and so on), in any attribute of a
/// request: resource, scope, span, event or link. A request with a deeper value is refused
/// whole (400 / INVALID_ARGUMENT), as OTLP/JSON past serde_json's recursion limit always
/// was. Without one limit for both encodings, prost's recursion limit (100 messages) let
/// protobuf through to 47 levels while JSON stopped at 40; `wire.rs` reads up to this limit
/// and hands deeper values to prost and `decode::check_value_nesting`.
pub const MAX_VALUE_NESTING: usize = 32;

/// The service name of spans whose resource has no string `service.name` (the SDK default).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// The result of decoding one export request.
#[derive(Debug, Default)]
pub struct DecodedTraces {
    /// The accepted spans, or `None` when there are none (empty request or all rejected).
    pub batch: Option<RecordBatch>,
    /// Rows in `batch`.
    pub accepted_spans: usize,
    /// Spans that failed validation; reported to the client as OTLP partial success.
    pub rejected_spans: i64,
    /// Why spans were rejected, counted by reason; empty when nothing was rejected.
    pub error_message: String,
    /// The counts behind `error_message`, so a receiver can add its own refusals to them.
    pub(crate) rejections: Rejections,
}

impl DecodedTraces {
    /// The OTLP response for this request: `partial_success` is set only when spans were
    /// rejected, because the spec says it MUST stay unset on full success.
    pub fn export_response(&self) -> ExportTraceServiceResponse {
        let partial_success = (self.rejected_spans > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: self.rejected_spans,
            error_message: self.error_message.clone(),
        });
        ExportTraceServiceResponse { partial_success }
    }

    /// Refuses the accepted spans that started before `cutoff_ns`, the retention horizon of
    /// `retention`: stored, they would be deleted at the next retention check, after the
    /// client was told they were kept. They join the partial success with their reason.
    pub(crate) fn refuse_started_before(
        &mut self,
        cutoff_ns: i64,
        retention: Duration,
    ) -> Result<(), CollectorError> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        let total_spans = self.accepted_spans + self.rejections.total();
        let retained = retain_started_since(batch, cutoff_ns).map_err(|error| {
            CollectorError::Internal(format!("cannot apply the retention horizon: {error}"))
        })?;
        self.batch = retained.batch;
        if retained.expired == 0 {
            return Ok(());
        }
        self.accepted_spans -= retained.expired;
        self.rejections
            .add_many(Rejection::BeforeRetention, retained.expired);
        self.rejections.retention = Some(retention);
        self.rejected_spans = count_as_i64(self.rejections.total());
        self.error_message = self.rejections.message(total_spans);
        Ok(())
    }
}

/// The batch and the partial-success figures once every span of a request is appended.
pub(crate) fn finish_batch(
    mut builder: SpanBatchBuilder,
    rejections: &Rejections,
    total_spans: usize,
) -> DecodedTraces {
    let accepted_spans = builder.len();
    let batch = match builder.finish() {
        Ok(batch) => batch,
        Err(error) => {
            // Only a bug gets here; rejecting the whole request tells the client not to retry
            // data we cannot store, and the log says why.
            tracing::error!(%error, "could not build the span batch");
            return DecodedTraces {
                batch: None,
                accepted_spans: 0,
                rejected_spans: count_as_i64(total_spans),
                error_message: format!(
                    "rejected {total_spans} of {total_spans} spans: internal error while storing them"
                ),
                rejections: Rejections::default(),
            };
        }
    };
    decoded_traces(batch, accepted_spans, rejections, total_spans)
}

/// The result of a request whose `accepted_spans` of `total_spans` are in `batch`.
pub(crate) fn decoded_traces(
    batch: RecordBatch,
    accepted_spans: usize,
    rejections: &Rejections,
    total_spans: usize,
) -> DecodedTraces {
    DecodedTraces {
        batch: (accepted_spans > 0).then_some(batch),
        accepted_spans,
        rejected_spans: count_as_i64(rejections.total()),
        error_message: rejections.message(total_spans),
        rejections: rejections.clone(),
    }
}

/// Why a span was rejected; the order here is the order of checks and of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    InvalidTraceId,
    InvalidSpanId,
    InvalidParentSpanId,
    TimeOutOfRange,
    EndBeforeStart,
    /// Refused by the receiver, not the decoder: the span started before the retention
    /// horizon (`DecodedTraces::refuse_started_before`).
    BeforeRetention,
    Unstorable,
}

impl Rejection {
    const ALL: [Rejection; 7] = [
        Rejection::InvalidTraceId,
        Rejection::InvalidSpanId,
        Rejection::InvalidParentSpanId,
        Rejection::TimeOutOfRange,
        Rejection::EndBeforeStart,
        Rejection::BeforeRetention,
        Rejection::Unstorable,
    ];

    /// What follows the count in the message: "3 with an invalid trace_id".
    fn describe(self, retention: Option<Duration>) -> String {
        match self {
            Rejection::InvalidTraceId => "with an invalid trace_id".into(),
            Rejection::InvalidSpanId => "with an invalid span_id".into(),
            Rejection::InvalidParentSpanId => "with an invalid parent_span_id".into(),
            Rejection::TimeOutOfRange => "with a start_time or end_time after the year 2262".into(),
            Rejection::EndBeforeStart => "with end_time before start_time".into(),
            Rejection::BeforeRetention => format!(
                "started before the retention horizon ({}) and would be deleted at once",
                retention.map_or_else(|| "unknown".to_string(), format_duration)
            ),
            Rejection::Unstorable => "with an internal error while storing it".into(),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Rejections {
    counts: [usize; Rejection::ALL.len()],
    /// The retention behind [`Rejection::BeforeRetention`], for its message.
    retention: Option<Duration>,
}

impl Rejections {
    pub(crate) fn add(&mut self, reason: Rejection) {
        self.add_many(reason, 1);
    }

    fn add_many(&mut self, reason: Rejection, count: usize) {
        self.counts[reason as usize] += count;
    }

    fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// "rejected 3 of 10 spans: 2 with an invalid trace_id, 1 with end_time before start_time"
    fn message(&self, total_spans: usize) -> String {
        let rejected = self.total();
        if rejected == 0 {
            return String::new();
        }
        let reasons: Vec<String> = Rejection::ALL
            .iter()
            .filter(|reason| self.counts[**reason as usize] > 0)
            .map(|reason| {
                format!(
                    "{} {}",
                    self.counts[*reason as usize],
                    reason.describe(self.retention)
                )
            })
            .collect();
        format!(
            "rejected {rejected} of {total_spans} spans: {}",
            reasons.join(", ")
        )
    }
}

/// The parts of a span that validation turns into storage types.
pub(crate) struct CheckedSpan<'a> {
    pub(crate) parent_span_id: Option<&'a [u8]>,
    pub(crate) start_time_unix_nano: i64,
    pub(crate) end_time_unix_nano: i64,
}

/// The span checks in order; the first that fails names the rejection.
pub(crate) fn check_span_fields<'a>(
    trace_id: &[u8],
    span_id: &[u8],
    parent_span_id: &'a [u8],
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
) -> Result<CheckedSpan<'a>, Rejection> {
    if !is_valid_trace_id(trace_id) {
        return Err(Rejection::InvalidTraceId);
    }
    if !is_valid_span_id(span_id) {
        return Err(Rejection::InvalidSpanId);
    }
    let parent_span_id = match parent_span_id {
        [] => None,
        parent if is_valid_span_id(parent) => Some(parent),
        _ => return Err(Rejection::InvalidParentSpanId),
    };
    let (Ok(start), Ok(end)) = (
        i64::try_from(start_time_unix_nano),
        i64::try_from(end_time_unix_nano),
    ) else {
        return Err(Rejection::TimeOutOfRange);
    };
    if end < start {
        return Err(Rejection::EndBeforeStart);
    }
    Ok(CheckedSpan {
        parent_span_id,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
    })
}

fn count_as_i64(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

pub(crate) fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "INTERNAL",
        2 => "SERVER",
        3 => "CLIENT",
        4 => "PRODUCER",
        5 => "CONSUMER",
        _ => "UNSPECIFIED",
    }
}

pub(crate) fn status_name(code: i32) -> &'static str {
    match code {
        1 => "OK",
        2 => "ERROR",
        _ => "UNSET",
    }
}

pub(crate) fn write_json_string(text: &str, out: &mut String) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if u32::from(control) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(control));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

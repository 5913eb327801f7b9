//! OTLP trace requests (protobuf or JSON) to one Arrow batch in the storage schema: pure
//! functions, no I/O, shared by the gRPC and HTTP receivers.
//!
//! Validation follows `trace.proto` (`spans.rs`): a span whose ids or times are invalid is
//! rejected and counted, the rest of the request is kept (OTLP partial success). Protobuf
//! goes through `wire.rs` first; this file calls it, never the other way round.
//!
//! What the storage schema has no column for is dropped: scope attributes, event and link
//! `dropped_attributes_count`, link flags and schema URLs. Attribute keys are stored as they
//! come, duplicates included and in wire order: the spec says keys MUST be unique, but
//! dropping one of two values would be a guess.

use std::borrow::Cow;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use flowscope_model::SpanBatchBuilder;
use flowscope_model::ids::to_hex;
use flowscope_model::schema::{EventRecord, LinkRecord, SpanRecord};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::CollectorError;
use crate::spans::{
    CheckedSpan, Rejection, Rejections, check_span_fields, finish_batch, kind_name, status_name,
    write_json_string,
};
pub use crate::spans::{DecodedTraces, MAX_VALUE_NESTING, UNKNOWN_SERVICE};

/// Protobuf bodies up to this size are decoded on the async runtime; bigger (or gzipped, over
/// HTTP) ones go to the blocking pool, because decoding them takes longer than an async task
/// may block. 256 KiB holds an SDK's default export of 512 spans, which decodes in about
/// 0.3 ms: handing it to the pool and waking the task again cost 4–12% of the server's CPU
/// per span (measured side by side, BENCHMARKS.md).
pub(crate) const INLINE_DECODE_BYTES: usize = 256 * 1024;

/// The same for OTLP/JSON, which decodes several times slower per byte.
pub(crate) const INLINE_DECODE_JSON_BYTES: usize = 16 * 1024;

/// Decodes a binary protobuf `ExportTraceServiceRequest` into one batch.
///
/// `wire::decode` reads the request straight into the Arrow builders; a request it does not
/// read (see `wire.rs`: merged fields, groups, malformed bytes) goes through
/// [`decode_protobuf_with_prost`], which gives the same result for every request both read.
pub fn decode_protobuf(body: &[u8]) -> Result<DecodedTraces, CollectorError> {
    match crate::wire::decode(body) {
        Ok(decoded) => Ok(decoded),
        Err(crate::wire::Unusual) => decode_protobuf_with_prost(body),
    }
}

/// Decodes a binary protobuf request with prost's generated types, then [`convert`]s it:
/// the reference for [`decode_protobuf`], and what the benchmark's decode-only baseline
/// measures.
pub fn decode_protobuf_with_prost(body: &[u8]) -> Result<DecodedTraces, CollectorError> {
    let request = ExportTraceServiceRequest::decode(body).map_err(|error| {
        CollectorError::InvalidRequest(format!(
            "request body is not a valid OTLP ExportTraceServiceRequest protobuf: {error}"
        ))
    })?;
    check_value_nesting(&request)?;
    Ok(convert(request))
}

/// Decodes an OTLP/JSON `ExportTraceServiceRequest` and converts it.
///
/// Ids must be hex (either case) as OTLP/JSON requires; base64 ids, which a generic protobuf
/// JSON encoder would produce, are refused, so the HTTP receiver answers 400.
pub fn decode_json(body: &[u8]) -> Result<DecodedTraces, CollectorError> {
    let request: ExportTraceServiceRequest = serde_json::from_slice(body).map_err(|error| {
        CollectorError::InvalidRequest(format!("request body is not valid OTLP/JSON: {error}"))
    })?;
    check_value_nesting(&request)?;
    Ok(convert(request))
}

/// Refuses a request any of whose attribute values is nested deeper than
/// [`MAX_VALUE_NESTING`] levels; the same check for protobuf and JSON.
pub(crate) fn check_value_nesting(
    request: &ExportTraceServiceRequest,
) -> Result<(), CollectorError> {
    let too_deep = |attributes: &[KeyValue]| {
        attributes
            .iter()
            .any(|attribute| value_levels(attribute.value.as_ref(), 1) > MAX_VALUE_NESTING)
    };
    let refused = request.resource_spans.iter().any(|resource_spans| {
        resource_spans
            .resource
            .as_ref()
            .is_some_and(|resource| too_deep(&resource.attributes))
            || resource_spans.scope_spans.iter().any(|scope_spans| {
                scope_spans
                    .scope
                    .as_ref()
                    .is_some_and(|scope| too_deep(&scope.attributes))
                    || scope_spans.spans.iter().any(|span| {
                        too_deep(&span.attributes)
                            || span.events.iter().any(|event| too_deep(&event.attributes))
                            || span.links.iter().any(|link| too_deep(&link.attributes))
                    })
            })
    });
    if refused {
        return Err(nesting_error());
    }
    Ok(())
}

/// The error for a value nested past [`MAX_VALUE_NESTING`].
pub(crate) fn nesting_error() -> CollectorError {
    CollectorError::InvalidRequest(format!(
        "an attribute value is nested deeper than {MAX_VALUE_NESTING} levels of arrays and \
         key-value lists: flatten it or send it as a string"
    ))
}

/// The levels of `value`, which sits at `level`; stops counting one past the limit, so a
/// value as deep as prost allows costs no more than the limit to measure.
fn value_levels(value: Option<&AnyValue>, level: usize) -> usize {
    if level > MAX_VALUE_NESTING {
        return level;
    }
    let children: Box<dyn Iterator<Item = Option<&AnyValue>>> =
        match value.and_then(|any| any.value.as_ref()) {
            Some(Value::ArrayValue(array)) => Box::new(array.values.iter().map(Some)),
            Some(Value::KvlistValue(list)) => {
                Box::new(list.values.iter().map(|entry| entry.value.as_ref()))
            }
            _ => return level,
        };
    children
        .map(|child| value_levels(child, level + 1))
        .max()
        .unwrap_or(level)
}

/// Converts a request into one batch in `flowscope_model::storage_schema()`, rejecting the
/// spans that fail validation.
pub fn convert(request: ExportTraceServiceRequest) -> DecodedTraces {
    let total_spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|resource_spans| &resource_spans.scope_spans)
        .map(|scope_spans| scope_spans.spans.len())
        .sum();
    if total_spans == 0 {
        return DecodedTraces::default();
    }

    let mut builder = SpanBatchBuilder::with_capacity(total_spans);
    let mut rejections = Rejections::default();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans.resource.as_ref();
        let resource_attributes = render_attributes(resource.map_or(&[], |r| &r.attributes));
        let service_name = service_name(resource);
        for scope_spans in &resource_spans.scope_spans {
            let (scope_name, scope_version) =
                scope_spans.scope.as_ref().map_or(("", ""), |scope| {
                    (scope.name.as_str(), scope.version.as_str())
                });
            for span in &scope_spans.spans {
                let checked = match check_span(span) {
                    Ok(checked) => checked,
                    Err(reason) => {
                        rejections.add(reason);
                        continue;
                    }
                };
                let record = SpanRecord {
                    trace_id: &span.trace_id,
                    span_id: &span.span_id,
                    parent_span_id: checked.parent_span_id,
                    trace_state: &span.trace_state,
                    name: &span.name,
                    kind: kind_name(span.kind),
                    service_name,
                    start_time_unix_nano: checked.start_time_unix_nano,
                    end_time_unix_nano: checked.end_time_unix_nano,
                    status_code: span
                        .status
                        .as_ref()
                        .map_or("UNSET", |s| status_name(s.code)),
                    status_message: span.status.as_ref().map_or("", |s| s.message.as_str()),
                    scope_name,
                    scope_version,
                    flags: span.flags,
                    dropped_attributes_count: span.dropped_attributes_count,
                    dropped_events_count: span.dropped_events_count,
                    dropped_links_count: span.dropped_links_count,
                };
                let appended = builder.append(
                    &record,
                    &render_attributes(&span.attributes),
                    &resource_attributes,
                    &events(span),
                    &links(span),
                );
                if let Err(error) = appended {
                    tracing::error!(%error, "a validated span could not be appended to the batch");
                    rejections.add(Rejection::Unstorable);
                }
            }
        }
    }

    finish_batch(builder, &rejections, total_spans)
}

fn check_span(span: &Span) -> Result<CheckedSpan<'_>, Rejection> {
    check_span_fields(
        &span.trace_id,
        &span.span_id,
        &span.parent_span_id,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
    )
}

/// The resource's `service.name` when it is a non-empty string, else `unknown_service`.
fn service_name(resource: Option<&Resource>) -> &str {
    let attributes = resource.map_or(&[][..], |r| r.attributes.as_slice());
    attributes
        .iter()
        .find(|attribute| attribute.key == "service.name")
        .and_then(
            |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                Value::StringValue(name) if !name.is_empty() => Some(name.as_str()),
                _ => None,
            },
        )
        .unwrap_or(UNKNOWN_SERVICE)
}

fn events(span: &Span) -> Vec<EventRecord> {
    span.events
        .iter()
        .map(|event| EventRecord {
            // An event time past i64 nanoseconds (year 2262) is clamped rather than costing
            // the client the whole span.
            time_unix_nano: i64::try_from(event.time_unix_nano).unwrap_or(i64::MAX),
            name: event.name.clone(),
            attributes: render_owned_attributes(&event.attributes),
        })
        .collect()
}

/// Link ids are rendered as given, even when invalid: a link is a hint, not an identity.
fn links(span: &Span) -> Vec<LinkRecord> {
    span.links
        .iter()
        .map(|link| LinkRecord {
            trace_id: to_hex(&link.trace_id),
            span_id: to_hex(&link.span_id),
            trace_state: link.trace_state.clone(),
            attributes: render_owned_attributes(&link.attributes),
        })
        .collect()
}

fn render_attributes(attributes: &[KeyValue]) -> Vec<(&str, Cow<'_, str>)> {
    attributes
        .iter()
        .map(|attribute| {
            (
                attribute.key.as_str(),
                render_value(attribute.value.as_ref()),
            )
        })
        .collect()
}

fn render_owned_attributes(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|attribute| {
            let value = render_value(attribute.value.as_ref()).into_owned();
            (attribute.key.clone(), value)
        })
        .collect()
}

/// An attribute value as text: strings as they are, numbers and booleans in their canonical
/// form, bytes as standard base64, arrays and key-value lists as compact JSON, and an empty
/// value as the empty string. `string_value_strindex` only means something in profiles,
/// which have a string table; in traces it renders as empty.
fn render_value(value: Option<&AnyValue>) -> Cow<'_, str> {
    let Some(value) = value.and_then(|any| any.value.as_ref()) else {
        return Cow::Borrowed("");
    };
    match value {
        Value::StringValue(text) => Cow::Borrowed(text),
        Value::BoolValue(flag) => Cow::Borrowed(if *flag { "true" } else { "false" }),
        Value::IntValue(number) => Cow::Owned(number.to_string()),
        Value::DoubleValue(number) => Cow::Owned(number.to_string()),
        Value::BytesValue(bytes) => Cow::Owned(BASE64.encode(bytes)),
        Value::ArrayValue(_) | Value::KvlistValue(_) => {
            let mut json = String::new();
            write_json(Some(value), &mut json);
            Cow::Owned(json)
        }
        Value::StringValueStrindex(_) => Cow::Borrowed(""),
    }
}

/// Writes a nested value as compact JSON. Key-value lists become objects with keys in wire
/// order (duplicates kept); non-finite doubles, which JSON cannot hold as numbers, become the
/// strings "NaN", "inf" and "-inf" (Rust's Display, as at the top level).
fn write_json(value: Option<&Value>, out: &mut String) {
    match value {
        None | Some(Value::StringValueStrindex(_)) => out.push_str("null"),
        Some(Value::StringValue(text)) => write_json_string(text, out),
        Some(Value::BoolValue(flag)) => out.push_str(if *flag { "true" } else { "false" }),
        Some(Value::IntValue(number)) => {
            let _ = write!(out, "{number}");
        }
        Some(Value::DoubleValue(number)) if number.is_finite() => {
            let _ = write!(out, "{number}");
        }
        Some(Value::DoubleValue(number)) => write_json_string(&number.to_string(), out),
        Some(Value::BytesValue(bytes)) => write_json_string(&BASE64.encode(bytes), out),
        Some(Value::ArrayValue(array)) => {
            out.push('[');
            for (index, item) in array.values.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_json(item.value.as_ref(), out);
            }
            out.push(']');
        }
        Some(Value::KvlistValue(list)) => {
            out.push('{');
            for (index, entry) in list.values.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_json_string(&entry.key, out);
                out.push(':');
                write_json(entry.value.as_ref().and_then(|v| v.value.as_ref()), out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::{span, status};
    use proptest::prelude::*;

    fn converted_one(span: Span) -> DecodedTraces {
        convert(request_with(vec![span]))
    }

    fn check_attribute(value: Option<Value>, expected: &str) {
        let mut span = valid_span(1);
        span.attributes = vec![KeyValue {
            key: "k".into(),
            value: Some(AnyValue { value }),
            key_strindex: 0,
        }];
        let decoded = converted_one(span);
        let batch = decoded.batch.expect("one span accepted");
        assert_eq!(
            map_column(&batch, "attributes", 0),
            vec![("k".to_string(), expected.to_string())]
        );
    }

    fn string_value(text: &str) -> AnyValue {
        AnyValue {
            value: Some(Value::StringValue(text.into())),
        }
    }

    #[test]
    fn attribute_values_render_as_text() {
        check_attribute(None, "");
        check_attribute(Some(Value::StringValue("GET".into())), "GET");
        check_attribute(Some(Value::BoolValue(true)), "true");
        check_attribute(Some(Value::BoolValue(false)), "false");
        check_attribute(Some(Value::IntValue(-42)), "-42");
        check_attribute(Some(Value::DoubleValue(0.1)), "0.1");
        check_attribute(Some(Value::DoubleValue(2.0)), "2");
        check_attribute(Some(Value::DoubleValue(f64::NAN)), "NaN");
        check_attribute(Some(Value::BytesValue(vec![0xff, 0x00, 0x10])), "/wAQ");
        check_attribute(Some(Value::StringValueStrindex(3)), "");
        let array = ArrayValue {
            values: vec![
                string_value("a\"b"),
                AnyValue {
                    value: Some(Value::IntValue(7)),
                },
                AnyValue {
                    value: Some(Value::DoubleValue(f64::INFINITY)),
                },
                AnyValue { value: None },
                AnyValue {
                    value: Some(Value::BoolValue(false)),
                },
            ],
        };
        check_attribute(
            Some(Value::ArrayValue(array.clone())),
            r#"["a\"b",7,"inf",null,false]"#,
        );
        let kvlist = KeyValueList {
            values: vec![
                KeyValue {
                    key: "z".into(),
                    value: Some(AnyValue {
                        value: Some(Value::ArrayValue(array)),
                    }),
                    key_strindex: 0,
                },
                KeyValue {
                    key: "a\n".into(),
                    value: Some(AnyValue {
                        value: Some(Value::BytesValue(vec![1, 2])),
                    }),
                    key_strindex: 0,
                },
                KeyValue {
                    key: "z".into(),
                    value: None,
                    key_strindex: 0,
                },
            ],
        };
        check_attribute(
            Some(Value::KvlistValue(kvlist)),
            r#"{"z":["a\"b",7,"inf",null,false],"a\n":"AQI=","z":null}"#,
        );
    }

    #[test]
    fn nested_json_is_valid_json() {
        let kvlist = Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "ctl\u{1}".into(),
                value: Some(AnyValue {
                    value: Some(Value::DoubleValue(-0.5)),
                }),
                key_strindex: 0,
            }],
        });
        let any = AnyValue {
            value: Some(kvlist),
        };
        let rendered = render_value(Some(&any));
        let parsed: serde_json::Value = serde_json::from_str(&rendered).expect("valid json");
        assert_eq!(parsed, serde_json::json!({"ctl\u{1}": -0.5}));
    }

    #[test]
    fn kinds_and_statuses_map_to_names() {
        let cases = [
            (0, "UNSPECIFIED"),
            (1, "INTERNAL"),
            (2, "SERVER"),
            (3, "CLIENT"),
            (4, "PRODUCER"),
            (5, "CONSUMER"),
            (6, "UNSPECIFIED"),
            (-1, "UNSPECIFIED"),
        ];
        for (kind, expected) in cases {
            let mut span = valid_span(1);
            span.kind = kind;
            let batch = converted_one(span).batch.expect("accepted");
            assert_eq!(
                string_column(&batch, "kind", 0).as_deref(),
                Some(expected),
                "kind {kind}"
            );
        }
        let statuses = [
            (None, "UNSET", None),
            (Some((0, "")), "UNSET", None),
            (Some((1, "")), "OK", None),
            (Some((2, "boom")), "ERROR", Some("boom")),
            (Some((9, "odd")), "UNSET", Some("odd")),
        ];
        for (status, expected_code, expected_message) in statuses {
            let mut span = valid_span(1);
            span.status =
                status.map(
                    |(code, message)| opentelemetry_proto::tonic::trace::v1::Status {
                        code,
                        message: message.into(),
                    },
                );
            let batch = converted_one(span).batch.expect("accepted");
            assert_eq!(
                string_column(&batch, "status_code", 0).as_deref(),
                Some(expected_code)
            );
            assert_eq!(
                string_column(&batch, "status_message", 0).as_deref(),
                expected_message
            );
        }
        assert_eq!(
            status::StatusCode::Error as i32,
            2,
            "proto numbering is what we map"
        );
        assert_eq!(span::SpanKind::Consumer as i32, 5);
    }

    #[test]
    fn service_name_comes_from_the_resource_or_defaults() {
        let cases: [(Option<Vec<KeyValue>>, &str); 5] = [
            (None, UNKNOWN_SERVICE),
            (Some(vec![]), UNKNOWN_SERVICE),
            (
                Some(vec![key_value("service.name", "checkout")]),
                "checkout",
            ),
            (Some(vec![key_value("service.name", "")]), UNKNOWN_SERVICE),
            (
                Some(vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::IntValue(3)),
                    }),
                    key_strindex: 0,
                }]),
                UNKNOWN_SERVICE,
            ),
        ];
        for (attributes, expected) in cases {
            let mut request = request_with(vec![valid_span(1)]);
            request.resource_spans[0].resource = attributes.map(|attributes| Resource {
                attributes,
                ..Resource::default()
            });
            let batch = convert(request).batch.expect("accepted");
            assert_eq!(
                string_column(&batch, "service_name", 0).as_deref(),
                Some(expected)
            );
        }
    }

    #[test]
    fn span_fields_events_and_links_are_copied() {
        let mut span = valid_span(1);
        span.parent_span_id = vec![9; 8];
        span.trace_state = "k=v".into();
        span.flags = 0x101;
        span.dropped_attributes_count = 1;
        span.dropped_events_count = 2;
        span.dropped_links_count = 3;
        span.events = vec![span::Event {
            time_unix_nano: 1_500,
            name: "retry".into(),
            attributes: vec![key_value("attempt", "2")],
            dropped_attributes_count: 0,
        }];
        span.links = vec![
            span::Link {
                trace_id: vec![0xAB; 16],
                span_id: vec![0xCD; 8],
                trace_state: "a=b".into(),
                attributes: vec![key_value("why", "batch")],
                ..span::Link::default()
            },
            span::Link {
                trace_id: vec![0x01, 0x02],
                span_id: vec![],
                ..span::Link::default()
            },
        ];
        let mut request = request_with(vec![span]);
        request.resource_spans[0].scope_spans[0].scope = Some(
            opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                name: "io.opentelemetry.http".into(),
                version: "1.2.3".into(),
                ..Default::default()
            },
        );
        let decoded = convert(request);
        assert_eq!((decoded.accepted_spans, decoded.rejected_spans), (1, 0));
        assert_eq!(decoded.error_message, "");
        let batch = decoded.batch.expect("accepted");
        assert_eq!(batch.schema(), flowscope_model::storage_schema());
        assert_eq!(binary_column(&batch, "trace_id", 0), Some(vec![1; 16]));
        assert_eq!(binary_column(&batch, "parent_span_id", 0), Some(vec![9; 8]));
        assert_strings(
            &batch,
            0,
            &[
                ("trace_state", "k=v"),
                ("scope_name", "io.opentelemetry.http"),
                ("scope_version", "1.2.3"),
            ],
        );
        assert_eq!(u32_column(&batch, "flags", 0), 0x101);
        assert_eq!(u32_column(&batch, "dropped_attributes_count", 0), 1);
        assert_eq!(u32_column(&batch, "dropped_events_count", 0), 2);
        assert_eq!(u32_column(&batch, "dropped_links_count", 0), 3);
        assert_eq!(i64_column(&batch, "duration_ns", 0), 1_000);
        assert_eq!(
            events_column(&batch, 0),
            vec![(
                1_500,
                "retry".to_string(),
                vec![("attempt".into(), "2".into())]
            )]
        );
        assert_eq!(
            links_column(&batch, 0),
            vec![
                (
                    "ab".repeat(16),
                    "cd".repeat(8),
                    Some("a=b".to_string()),
                    vec![("why".into(), "batch".into())]
                ),
                ("0102".to_string(), String::new(), None, vec![]),
            ]
        );
    }

    #[test]
    fn invalid_spans_are_rejected_and_counted_by_reason() {
        let mut zero_trace = valid_span(2);
        zero_trace.trace_id = vec![0; 16];
        let mut short_span_id = valid_span(3);
        short_span_id.span_id = vec![1; 15];
        let mut zero_span_id = valid_span(4);
        zero_span_id.span_id = vec![0; 8];
        let mut bad_parent = valid_span(5);
        bad_parent.parent_span_id = vec![1; 4];
        let mut end_before_start = valid_span(6);
        end_before_start.end_time_unix_nano = end_before_start.start_time_unix_nano - 1;
        let mut too_late = valid_span(7);
        too_late.end_time_unix_nano = u64::MAX;
        let mut also_zero_trace = valid_span(8);
        also_zero_trace.trace_id = vec![];
        let spans = vec![
            valid_span(1),
            zero_trace,
            short_span_id,
            zero_span_id,
            bad_parent,
            end_before_start,
            too_late,
            also_zero_trace,
            valid_span(9),
        ];
        let decoded = convert(request_with(spans));
        assert_eq!(decoded.accepted_spans, 2);
        assert_eq!(decoded.rejected_spans, 7);
        assert_eq!(
            decoded.error_message,
            "rejected 7 of 9 spans: 2 with an invalid trace_id, 2 with an invalid span_id, \
             1 with an invalid parent_span_id, 1 with a start_time or end_time after the year 2262, \
             1 with end_time before start_time"
        );
        let response = decoded.export_response();
        let batch = decoded.batch.expect("valid spans kept");
        assert_eq!(binary_column(&batch, "span_id", 0), Some(vec![1; 8]));
        assert_eq!(binary_column(&batch, "span_id", 1), Some(vec![9; 8]));
        let partial = response.partial_success.expect("partial success set");
        assert_eq!(partial.rejected_spans, 7);
    }

    #[test]
    fn all_rejected_gives_no_batch_and_a_partial_success() {
        let mut span = valid_span(1);
        span.trace_id = vec![0; 16];
        let decoded = converted_one(span);
        assert!(decoded.batch.is_none());
        assert_eq!(decoded.rejected_spans, 1);
        assert_eq!(
            decoded.error_message,
            "rejected 1 of 1 spans: 1 with an invalid trace_id"
        );
    }

    #[test]
    fn an_empty_request_is_a_success_without_a_batch() {
        for request in [ExportTraceServiceRequest::default(), request_with(vec![])] {
            let decoded = convert(request);
            assert!(decoded.batch.is_none());
            assert_eq!((decoded.accepted_spans, decoded.rejected_spans), (0, 0));
            assert_eq!(decoded.export_response().partial_success, None);
        }
    }

    #[test]
    fn full_success_leaves_partial_success_unset() {
        let decoded = converted_one(valid_span(1));
        assert_eq!(
            decoded.export_response(),
            ExportTraceServiceResponse::default()
        );
    }

    fn decode_json_str(json: &str) -> Result<DecodedTraces, CollectorError> {
        decode_json(json.as_bytes())
    }

    const OTLP_JSON: &str = r#"{
      "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
        "scopeSpans": [{
          "scope": {"name": "manual"},
          "spans": [{
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "parentSpanId": "",
            "name": "GET /cart",
            "kind": 2,
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": 1544712661000000000,
            "attributes": [
              {"key": "http.status_code", "value": {"intValue": "200"}},
              {"key": "retries", "value": {"intValue": 3}}
            ],
            "someFieldFromTheFuture": {"nested": [1, 2]},
            "status": {"code": 2, "message": "boom"}
          }]
        }]
      }]
    }"#;

    #[test]
    fn decode_json_follows_otlp_json_rules() {
        let decoded = decode_json_str(OTLP_JSON).expect("valid OTLP/JSON");
        assert_eq!((decoded.accepted_spans, decoded.rejected_spans), (1, 0));
        let batch = decoded.batch.expect("accepted");
        assert_eq!(
            binary_column(&batch, "trace_id", 0)
                .map(|id| to_hex(&id))
                .as_deref(),
            Some("5b8efff798038103d269b633813fc60c")
        );
        assert_eq!(
            binary_column(&batch, "span_id", 0)
                .map(|id| to_hex(&id))
                .as_deref(),
            Some("eee19b7ec3c1b174")
        );
        assert_eq!(binary_column(&batch, "parent_span_id", 0), None);
        assert_strings(
            &batch,
            0,
            &[
                ("kind", "SERVER"),
                ("service_name", "cart"),
                ("status_code", "ERROR"),
            ],
        );
        assert_eq!(
            i64_column(&batch, "start_time", 0),
            1_544_712_660_000_000_000
        );
        assert_eq!(i64_column(&batch, "end_time", 0), 1_544_712_661_000_000_000);
        assert_eq!(
            map_column(&batch, "attributes", 0),
            vec![
                ("http.status_code".to_string(), "200".to_string()),
                ("retries".to_string(), "3".to_string())
            ]
        );
    }

    #[test]
    fn decode_json_refuses_what_is_not_otlp_json() {
        let cases = [
            (
                "{",
                "request body is not valid OTLP/JSON: EOF while parsing an object",
            ),
            (
                r#"{"resourceSpans": 7}"#,
                "request body is not valid OTLP/JSON: invalid type: integer `7`",
            ),
            // Base64 ids are what a generic protobuf JSON encoder writes; OTLP/JSON wants hex.
            (
                r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA==","spanId":"7uGbfsPBsXQ="}]}]}]}"#,
                "request body is not valid OTLP/JSON: invalid character 'W' at position 0",
            ),
            (
                r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}"#,
                "request body is not valid OTLP/JSON: invalid digit",
            ),
        ];
        for (json, expected_prefix) in cases {
            let error = decode_json_str(json).expect_err(json);
            assert!(matches!(error, CollectorError::InvalidRequest(_)), "{json}");
            let message = error.to_string();
            assert!(message.starts_with(expected_prefix), "{json}: {message}");
            assert!(message.contains("line 1 column"), "{json}: {message}");
        }
    }

    #[test]
    fn decode_protobuf_round_trips_and_names_the_problem() {
        let encoded = request_with(vec![valid_span(1), valid_span(2)]).encode_to_vec();
        let decoded = decode_protobuf(&encoded).expect("valid protobuf");
        assert_eq!(decoded.accepted_spans, 2);
        let error = decode_protobuf(&encoded[..encoded.len() - 3]).expect_err("truncated");
        assert!(
            error.to_string().starts_with(
                "request body is not a valid OTLP ExportTraceServiceRequest protobuf: "
            ),
            "{error}"
        );
    }

    proptest! {
        #[test]
        fn decode_protobuf_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_protobuf(&body);
        }

        #[test]
        fn decode_protobuf_never_panics_on_a_truncated_request(spans in 1u8..20, cut in any::<prop::sample::Index>()) {
            let mut request = request_with((1..=spans).map(|id| {
                let mut span = valid_span(id);
                span.attributes = vec![key_value("k", "v")];
                span.events = vec![span::Event { name: "e".into(), ..Default::default() }];
                span
            }).collect());
            request.resource_spans[0].resource = Some(Resource {
                attributes: vec![key_value("service.name", "svc")],
                ..Resource::default()
            });
            let encoded = request.encode_to_vec();
            let end = cut.index(encoded.len() + 1);
            if let Ok(decoded) = decode_protobuf(&encoded[..end]) {
                let rows = decoded.batch.map_or(0, |batch| batch.num_rows());
                prop_assert_eq!(rows, decoded.accepted_spans);
            }
        }
    }
}

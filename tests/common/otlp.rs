//! Hand-built OTLP requests for tests that need exact control over what is sent.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

pub fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// A minute ago, rounded to the minute: recent enough for any retention, stable within a test.
pub fn base_time_ns() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    (now.as_secs() / 60 - 1) * 60 * 1_000_000_000
}

/// A span with ten realistic attributes, unique ids derived from `n`.
pub fn span(n: u64, trace: u64) -> Span {
    let start = base_time_ns() + n * 1_000;
    let mut trace_id = vec![0u8; 16];
    trace_id[8..].copy_from_slice(&(trace + 1).to_be_bytes());
    let attributes = vec![
        string_attribute("http.request.method", "GET"),
        string_attribute("http.route", "/api/orders/{id}"),
        string_attribute("url.path", "/api/orders/12345"),
        string_attribute("server.address", "orders.internal"),
        string_attribute("network.protocol.version", "1.1"),
        string_attribute("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
        string_attribute("client.address", "10.0.3.17"),
        string_attribute("http.response.status_code", "200"),
        string_attribute("deployment.environment", "production"),
        string_attribute("thread.name", "worker-7"),
    ];
    Span {
        trace_id,
        span_id: (n + 1).to_be_bytes().to_vec(),
        name: "GET /api/orders/{id}".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_500_000,
        attributes,
        status: Some(Status {
            code: 1,
            message: String::new(),
        }),
        ..Span::default()
    }
}

pub fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", service)],
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

/// `count` spans numbered from `first`, eight spans per trace.
pub fn numbered_request(service: &str, first: u64, count: u64) -> ExportTraceServiceRequest {
    request(
        service,
        (first..first + count).map(|n| span(n, n / 8)).collect(),
    )
}

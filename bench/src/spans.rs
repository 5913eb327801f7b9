//! Synthetic OTLP trace requests: realistic spans with unique ids, encoded to protobuf bytes.
//!
//! Everything is derived from a span's global number, so any request can be rebuilt on any
//! thread without shared state, and ids look random (as real ones do, which matters for the
//! on-disk size) yet never repeat: `mix` is a bijection on `u64`.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message as _;

pub use flowscope_demo::send::Encoded;
pub use flowscope_demo::simulate::mix;

/// Spans per trace: a SERVER root, three CLIENT calls, then INTERNAL, PRODUCER and CONSUMER work.
pub const SPANS_PER_TRACE: u64 = 8;

const SERVICES: [&str; 20] = [
    "frontend",
    "gateway",
    "auth",
    "cart",
    "checkout",
    "payment",
    "shipping",
    "email",
    "currency",
    "recommendation",
    "ad",
    "product-catalog",
    "quote",
    "accounting",
    "fraud-detection",
    "inventory",
    "search",
    "notification",
    "user-profile",
    "reviews",
];

const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "okhttp/4.12.0",
    "Go-http-client/1.1",
];

const CLIENT_CALLS: [&str; 3] = ["SELECT orders", "redis GET", "POST /v1/charges"];

/// Builds the requests of one run: `total_spans` spans, `batch` per request, start times
/// spread evenly over a window of `window_ns` that ends at the time given to each request.
#[derive(Debug, Clone, Copy)]
pub struct Generator {
    pub total_spans: u64,
    pub batch: u64,
    pub window_ns: u64,
}

impl Generator {
    pub fn requests(&self) -> u64 {
        self.total_spans.div_ceil(self.batch)
    }

    /// Request `index`, its start times placed as if the window ended at `end_ns`.
    pub fn encoded(&self, index: u64, end_ns: u64) -> Encoded {
        let request = self.request(index, end_ns);
        let spans = flowscope_demo::send::span_count(&request);
        Encoded {
            body: Bytes::from(request.encode_to_vec()),
            spans,
        }
    }

    /// A trace id, in the lowercase hex SQL shows, that a full run contains.
    pub fn trace_id_hex(&self, trace: u64) -> String {
        trace_id(trace).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn request(&self, index: u64, end_ns: u64) -> ExportTraceServiceRequest {
        let first = index * self.batch;
        let last = (first + self.batch).min(self.total_spans);
        // Like an SDK's batch exporter, each request comes from one service.
        let service = SERVICES[(index % SERVICES.len() as u64) as usize];
        let spans = (first..last)
            .map(|number| self.span(number, service, end_ns))
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string("service.name", service)],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "flowscope-bench".into(),
                        version: "0.1.0".into(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn span(&self, number: u64, service: &str, end_ns: u64) -> Span {
        let trace = number / SPANS_PER_TRACE;
        let position = number % SPANS_PER_TRACE;
        let root = number - position;
        let noise = mix(number ^ 0x5bd1_e995);

        let traces = self.total_spans.div_ceil(SPANS_PER_TRACE).max(1);
        let offset =
            u64::try_from(u128::from(trace) * u128::from(self.window_ns) / u128::from(traces))
                .unwrap_or(self.window_ns);
        let trace_start = end_ns.saturating_sub(self.window_ns) + offset;
        let start = trace_start + position * 150_000;
        let duration = match position {
            0 => 20_000_000 + noise % 180_000_000,
            _ => 200_000 + noise % 15_000_000,
        };

        let error = noise % 100 < 2;
        let (kind, name, parent) = match position {
            0 => (2, format!("GET /api/{service}/{{id}}"), None),
            1..=3 => (
                3,
                CLIENT_CALLS[position as usize - 1].to_string(),
                Some(root),
            ),
            4 | 5 => (1, "render".to_string(), Some(root + position - 3)),
            6 => (4, format!("{service} publish"), Some(root)),
            _ => (5, format!("{service} process"), Some(root + 6)),
        };
        let method = ["GET", "GET", "GET", "POST", "PUT", "DELETE"][(noise % 6) as usize];
        let status_code = match (error, noise % 50) {
            (true, _) => 503,
            (false, 0) => 404,
            (false, 1) => 201,
            _ => 200,
        };
        let attributes = vec![
            string("http.request.method", method),
            string("http.route", &format!("/api/{service}/{{id}}")),
            string("url.path", &format!("/api/{service}/{}", noise % 100_000)),
            string("url.scheme", "http"),
            string("server.address", &format!("{service}.prod.internal")),
            int("server.port", 8080),
            string("network.protocol.version", "1.1"),
            string(
                "user_agent.original",
                USER_AGENTS[(noise % USER_AGENTS.len() as u64) as usize],
            ),
            string(
                "client.address",
                &format!(
                    "10.{}.{}.{}",
                    noise % 8,
                    (noise >> 8) % 256,
                    (noise >> 16) % 256
                ),
            ),
            int("http.response.status_code", status_code),
        ];
        Span {
            trace_id: trace_id(trace).to_vec(),
            span_id: span_id(number).to_vec(),
            parent_span_id: parent.map(|p| span_id(p).to_vec()).unwrap_or_default(),
            name,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: start + duration,
            attributes,
            status: Some(Status {
                code: if error {
                    status::StatusCode::Error as i32
                } else {
                    status::StatusCode::Unset as i32
                },
                message: if error {
                    "upstream request timed out".into()
                } else {
                    String::new()
                },
            }),
            ..Span::default()
        }
    }
}

fn trace_id(trace: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&mix(trace).to_be_bytes());
    id[8..].copy_from_slice(&mix(trace ^ 0xa5a5_a5a5_a5a5_a5a5).to_be_bytes());
    id
}

fn span_id(number: u64) -> [u8; 8] {
    // The one number that mixes to zero (an invalid id) lies far outside any run.
    mix(number.wrapping_add(1 << 40)).to_be_bytes()
}

fn string(key: &str, value: &str) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value))
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

//! Builds OTLP requests for a small event-driven system, trace by trace, with exact control
//! over parents, kinds, links and attributes.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::otlp::{base_time_ns, string_attribute};

pub const INTERNAL: i32 = 1;
pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
pub const PRODUCER: i32 = 4;
pub const CONSUMER: i32 = 5;

/// Spans grouped by service, ready to become one request.
#[derive(Default)]
pub struct Topology {
    spans: BTreeMap<String, Vec<Span>>,
    next_id: u64,
}

/// A span's identity, to parent or link other spans to it.
#[derive(Clone)]
pub struct SpanRef {
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
}

impl Topology {
    /// A topology whose ids start after `first_id`, so that it shares none with another.
    pub fn starting_at(first_id: u64) -> Self {
        Self {
            spans: BTreeMap::new(),
            next_id: first_id,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn new_trace(&mut self) -> Vec<u8> {
        let mut trace = vec![0xAB; 16];
        trace[8..].copy_from_slice(&self.id().to_be_bytes());
        trace
    }

    /// Adds a span of `service`; `offset_ms` from the base time, lasting `duration_ms`.
    #[allow(clippy::too_many_arguments)]
    pub fn span(
        &mut self,
        service: &str,
        trace_id: &[u8],
        parent: Option<&SpanRef>,
        kind: i32,
        name: &str,
        offset_ms: u64,
        duration_ms: u64,
        error: bool,
        attributes: &[(&str, &str)],
        links: &[&SpanRef],
    ) -> SpanRef {
        let span_id = self.id().to_be_bytes().to_vec();
        let start = base_time_ns() + offset_ms * 1_000_000;
        let span = Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.clone(),
            parent_span_id: parent.map(|p| p.span_id.clone()).unwrap_or_default(),
            name: name.into(),
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: start + duration_ms * 1_000_000,
            attributes: attributes
                .iter()
                .map(|(k, v)| string_attribute(k, v))
                .collect(),
            links: links
                .iter()
                .map(|l| Link {
                    trace_id: l.trace_id.clone(),
                    span_id: l.span_id.clone(),
                    ..Link::default()
                })
                .collect(),
            status: Some(Status {
                code: if error { 2 } else { 1 },
                message: String::new(),
            }),
            ..Span::default()
        };
        self.spans
            .entry(service.to_string())
            .or_default()
            .push(span);
        SpanRef {
            trace_id: trace_id.to_vec(),
            span_id,
        }
    }

    /// Adds an event `offset_ms` after the base time to the span `span` of `service`.
    pub fn event(
        &mut self,
        service: &str,
        span: &SpanRef,
        name: &str,
        offset_ms: u64,
        attributes: &[(&str, &str)],
    ) {
        let target = self
            .spans
            .get_mut(service)
            .and_then(|spans| spans.iter_mut().find(|s| s.span_id == span.span_id))
            .expect("the span was added to this service");
        target.events.push(Event {
            time_unix_nano: base_time_ns() + offset_ms * 1_000_000,
            name: name.into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| string_attribute(k, v))
                .collect(),
            ..Event::default()
        });
    }

    /// One request per service, in reverse service order (children often before parents).
    pub fn requests(self) -> Vec<ExportTraceServiceRequest> {
        self.spans
            .into_iter()
            .rev()
            .map(|(service, spans)| ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![string_attribute("service.name", &service)],
                        ..Resource::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                }],
            })
            .collect()
    }
}

/// One order of the shop the graph and browser tests share: gateway → orders → inventory
/// (every fifth stock check fails), orders → orders-db (PostgreSQL, sends no spans), orders →
/// order-events (Kafka) → billing → orders, a loop through a queue whose consumer LINKS to the
/// producer from a trace of its own.
pub struct ShopOrder {
    pub trace: Vec<u8>,
    /// The gateway's SERVER span, the root of `trace`.
    pub root: SpanRef,
    pub billing_trace: Vec<u8>,
}

impl Topology {
    /// Adds order number `i` of the shop (see [`ShopOrder`]).
    pub fn shop_order(&mut self, i: u64) -> ShopOrder {
        let trace = self.new_trace();
        let root = self.span(
            "gateway",
            &trace,
            None,
            SERVER,
            "GET /checkout",
            0,
            50,
            false,
            &[],
            &[],
        );
        let call = self.span(
            "gateway",
            &trace,
            Some(&root),
            CLIENT,
            "POST /orders",
            1,
            40,
            false,
            &[],
            &[],
        );
        let orders = self.span(
            "orders",
            &trace,
            Some(&call),
            SERVER,
            "POST /orders",
            2,
            35,
            false,
            &[],
            &[],
        );
        let stock = self.span(
            "orders",
            &trace,
            Some(&orders),
            CLIENT,
            "GET /stock",
            3,
            10,
            false,
            &[],
            &[],
        );
        self.span(
            "inventory",
            &trace,
            Some(&stock),
            SERVER,
            "GET /stock",
            4,
            5,
            i.is_multiple_of(5),
            &[],
            &[],
        );
        let db = [("db.system", "postgresql"), ("db.name", "orders-db")];
        self.span(
            "orders",
            &trace,
            Some(&orders),
            CLIENT,
            "INSERT orders",
            15,
            3,
            false,
            &db,
            &[],
        );
        let topic = [
            ("messaging.system", "kafka"),
            ("messaging.destination.name", "order-events"),
        ];
        let publish = self.span(
            "orders",
            &trace,
            Some(&orders),
            PRODUCER,
            "publish order",
            20,
            1,
            false,
            &topic,
            &[],
        );

        let billing_trace = self.new_trace();
        let consume = self.span(
            "billing",
            &billing_trace,
            None,
            CONSUMER,
            "process order",
            100,
            20,
            false,
            &[],
            &[&publish],
        );
        let paid = self.span(
            "billing",
            &billing_trace,
            Some(&consume),
            CLIENT,
            "POST /orders/paid",
            105,
            8,
            false,
            &[],
            &[],
        );
        self.span(
            "orders",
            &billing_trace,
            Some(&paid),
            SERVER,
            "POST /orders/paid",
            106,
            6,
            false,
            &[],
            &[],
        );
        ShopOrder {
            trace,
            root,
            billing_trace,
        }
    }
}

//! A simulated event-driven system that sends realistic OTLP traces: what `flowscope serve
//! --demo` runs so that a newcomer sees a living graph, with a feedback loop, within seconds.
//!
//! ```text
//!  gateway ──> orders ──> inventory            (latency shift + error burst + retry storm
//!                │ ├──> orders-db (postgresql)   during the scheduled incident)
//!                │ └──> api.payments.example (no spans: an external peer)
//!                └──> order-events (kafka) ──> billing ──> orders   (a loop through a queue;
//!                                                                    the consumer LINKS to the producer)
//! ```
//!
//! The generator is a plain function of a seed and the time it is given; only [`run`] talks
//! to the network.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// How much the demo sends and when its incident happens.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Checkout traces started per second (each also starts one billing trace).
    pub traces_per_second: u32,
    /// An incident starts at every multiple of this since the Unix epoch...
    pub incident_every: Duration,
    /// ...and lasts this long: inventory slows down fivefold, fails one call in four, and
    /// orders retries each failed call up to three times (a retry storm).
    pub incident_length: Duration,
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            traces_per_second: 10,
            incident_every: Duration::from_secs(600),
            incident_length: Duration::from_secs(60),
            seed: 0x5EED_F10E,
        }
    }
}

impl DemoConfig {
    /// Whether the scheduled incident is on at `now_ns`.
    pub fn incident_at(&self, now_ns: i64) -> bool {
        let every = self.incident_every.as_nanos().max(1) as i64;
        now_ns.rem_euclid(every) < self.incident_length.as_nanos() as i64
    }
}

/// Generates the shop's traces.
#[derive(Debug)]
pub struct ShopSimulator {
    state: u64,
    next_id: u64,
}

const MS: u64 = 1_000_000;

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

/// One span under construction; `Spans` groups them by service.
struct Spans(Vec<(&'static str, Span)>);

impl ShopSimulator {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed | 1,
            next_id: seed.rotate_left(17) | 1,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64: deterministic for a seed, good enough for jitter.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.random().is_multiple_of(one_in)
    }

    fn jitter(&mut self, base_ms: u64) -> u64 {
        base_ms * MS + self.random() % (base_ms * MS / 2 + 1)
    }

    fn id(&mut self) -> Vec<u8> {
        self.next_id = self.next_id.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.next_id.max(1).to_be_bytes().to_vec()
    }

    fn trace_id(&mut self) -> Vec<u8> {
        let mut id = self.id();
        id.extend(self.id());
        id
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        spans: &mut Spans,
        service: &'static str,
        trace_id: &[u8],
        parent: Option<&Span>,
        kind: SpanKind,
        name: &str,
        start: u64,
        duration: u64,
        error: bool,
        attributes: Vec<KeyValue>,
    ) -> Span {
        let span = Span {
            trace_id: trace_id.to_vec(),
            span_id: self.id(),
            parent_span_id: parent.map(|p| p.span_id.clone()).unwrap_or_default(),
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + duration,
            attributes,
            status: Some(Status {
                code: if error {
                    StatusCode::Error
                } else {
                    StatusCode::Ok
                } as i32,
                message: if error {
                    "upstream failed".into()
                } else {
                    String::new()
                },
            }),
            ..Span::default()
        };
        spans.0.push((service, span.clone()));
        span
    }

    /// One checkout (and the billing it causes) starting at `start` ns.
    fn checkout(&mut self, spans: &mut Spans, start: u64, incident: bool) {
        let trace = self.trace_id();
        let http = |route: &str, method: &str| {
            vec![
                text("http.route", route),
                text("http.request.method", method),
            ]
        };
        let root_len = self.jitter(60);
        let root = self.span(
            spans,
            "gateway",
            &trace,
            None,
            SpanKind::Server,
            "GET /checkout",
            start,
            root_len,
            false,
            http("/checkout", "GET"),
        );
        let call_len = self.jitter(45);
        let call = self.span(
            spans,
            "gateway",
            &trace,
            Some(&root),
            SpanKind::Client,
            "POST /orders",
            start + MS,
            call_len,
            false,
            http("/orders", "POST"),
        );
        let orders_len = self.jitter(40);
        let orders = self.span(
            spans,
            "orders",
            &trace,
            Some(&call),
            SpanKind::Server,
            "POST /orders",
            start + 2 * MS,
            orders_len,
            false,
            http("/orders", "POST"),
        );

        let mut at = start + 3 * MS;
        let attempts = if incident { 3 } else { 1 };
        for _ in 0..attempts {
            let slow = if incident { 5 } else { 1 };
            let latency = self.jitter(8 * slow);
            let failed = if incident {
                self.chance(4)
            } else {
                self.chance(200)
            };
            let stock = self.span(
                spans,
                "orders",
                &trace,
                Some(&orders),
                SpanKind::Client,
                "GET /stock",
                at,
                latency + MS,
                failed,
                http("/stock", "GET"),
            );
            self.span(
                spans,
                "inventory",
                &trace,
                Some(&stock),
                SpanKind::Server,
                "GET /stock",
                at + MS / 2,
                latency,
                failed,
                http("/stock", "GET"),
            );
            at += latency + MS;
            if !failed {
                break;
            }
        }
        let db = vec![
            text("db.system", "postgresql"),
            text("db.name", "orders-db"),
            text("db.operation.name", "INSERT"),
        ];
        let db_len = self.jitter(3);
        self.span(
            spans,
            "orders",
            &trace,
            Some(&orders),
            SpanKind::Client,
            "INSERT orders",
            at,
            db_len,
            false,
            db,
        );
        let pay = vec![
            text("server.address", "api.payments.example"),
            text("http.request.method", "POST"),
            text("url.path", "/v1/charges"),
        ];
        let pay_len = self.jitter(12);
        let pay_failed = self.chance(50);
        self.span(
            spans,
            "orders",
            &trace,
            Some(&orders),
            SpanKind::Client,
            "POST /v1/charges",
            at + 4 * MS,
            pay_len,
            pay_failed,
            pay,
        );
        let topic = vec![
            text("messaging.system", "kafka"),
            text("messaging.destination.name", "order-events"),
            text("messaging.operation.type", "publish"),
            int(
                "messaging.message.body.size",
                300 + (self.random() % 200) as i64,
            ),
        ];
        let publish = self.span(
            spans,
            "orders",
            &trace,
            Some(&orders),
            SpanKind::Producer,
            "order-events publish",
            at + 20 * MS,
            MS,
            false,
            topic,
        );

        // Billing consumes later, in a trace of its own, linked to the publish.
        let billing_trace = self.trace_id();
        let consume_at = start + 40 * MS + self.jitter(10);
        let consume_len = self.jitter(15);
        let mut consume = self.span(
            spans,
            "billing",
            &billing_trace,
            None,
            SpanKind::Consumer,
            "order-events process",
            consume_at,
            consume_len,
            false,
            vec![
                text("messaging.system", "kafka"),
                text("messaging.operation.type", "process"),
            ],
        );
        let link = Link {
            trace_id: trace.clone(),
            span_id: publish.span_id.clone(),
            ..Link::default()
        };
        consume.links.push(link.clone());
        if let Some((_, stored)) = spans
            .0
            .iter_mut()
            .rev()
            .find(|(_, s)| s.span_id == consume.span_id)
        {
            stored.links.push(link);
        }
        let paid_len = self.jitter(6);
        let paid = self.span(
            spans,
            "billing",
            &billing_trace,
            Some(&consume),
            SpanKind::Client,
            "POST /orders/paid",
            consume_at + 2 * MS,
            paid_len,
            false,
            http("/orders/paid", "POST"),
        );
        let served_len = self.jitter(4);
        self.span(
            spans,
            "orders",
            &billing_trace,
            Some(&paid),
            SpanKind::Server,
            "POST /orders/paid",
            consume_at + 3 * MS,
            served_len,
            false,
            http("/orders/paid", "POST"),
        );
    }

    /// `traces` checkouts starting just before `now_ns`, as one request with a resource per
    /// service, the way SDKs batch them.
    pub fn request(
        &mut self,
        now_ns: i64,
        traces: u32,
        incident: bool,
    ) -> ExportTraceServiceRequest {
        let mut spans = Spans(Vec::new());
        for i in 0..traces {
            let start = (now_ns.max(0) as u64).saturating_sub(200 * MS) + u64::from(i) * MS;
            self.checkout(&mut spans, start, incident);
        }
        let mut by_service: Vec<(&'static str, Vec<Span>)> = Vec::new();
        for (service, span) in spans.0 {
            match by_service.iter_mut().find(|(s, _)| *s == service) {
                Some((_, list)) => list.push(span),
                None => by_service.push((service, vec![span])),
            }
        }
        ExportTraceServiceRequest {
            resource_spans: by_service
                .into_iter()
                .map(|(service, spans)| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            text("service.name", service),
                            text("service.namespace", "shop"),
                            text("deployment.environment.name", "demo"),
                        ],
                        ..Resource::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "flowscope-demo".into(),
                            ..InstrumentationScope::default()
                        }),
                        spans,
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                })
                .collect(),
        }
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Sends the shop's traces to an OTLP/gRPC `endpoint` (e.g. `http://127.0.0.1:4317`) twice a
/// second until `shutdown` resolves. Export errors are logged and the demo goes on.
pub async fn run(endpoint: String, config: DemoConfig, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut simulator = ShopSimulator::new(config.seed);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut client = None;
    let per_tick = config.traces_per_second.div_ceil(2).max(1);
    tracing::info!(%endpoint, traces_per_second = config.traces_per_second, "demo: sending a simulated shop's traces");
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        if client.is_none() {
            match TraceServiceClient::connect(endpoint.clone()).await {
                Ok(connected) => client = Some(connected),
                Err(error) => {
                    tracing::warn!(%error, "demo: cannot connect to the OTLP endpoint yet");
                    continue;
                }
            }
        }
        let now = now_ns();
        let request = simulator.request(now, per_tick, config.incident_at(now));
        if let Some(connected) = client.as_mut()
            && let Err(status) = connected.export(request).await
        {
            tracing::warn!(code = ?status.code(), message = status.message(), "demo: export failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_graph::{GraphConfig, LiveGraph};
    use prost::Message;

    const NOW: i64 = 1_764_396_000_000_000_000;

    fn graph_of(requests: &[ExportTraceServiceRequest]) -> flowscope_graph::Snapshot {
        let mut graph = LiveGraph::new(GraphConfig::default());
        for request in requests {
            let decoded =
                flowscope_collector::decode_protobuf(&request.encode_to_vec()).expect("decodes");
            assert_eq!(decoded.rejected_spans, 0, "{}", decoded.error_message);
            graph.ingest(&decoded.batch.expect("spans"), NOW);
        }
        graph.advance(NOW + 60_000_000_000);
        graph.snapshot(NOW - 3_600_000_000_000, NOW + 3_600_000_000_000)
    }

    #[test]
    fn the_shop_has_its_edges_its_virtual_peers_and_a_loop_through_the_queue() {
        let mut simulator = ShopSimulator::new(7);
        let snapshot = graph_of(&[simulator.request(NOW, 20, false)]);
        let mut edges: Vec<(String, String, &str)> = snapshot
            .edges
            .iter()
            .map(|e| (e.source.clone(), e.target.clone(), e.kind.as_str()))
            .collect();
        edges.sort();
        let expected = [
            ("billing", "orders", "sync"),
            ("gateway", "orders", "sync"),
            ("order-events", "billing", "async"),
            ("orders", "api.payments.example", "sync"),
            ("orders", "inventory", "sync"),
            ("orders", "order-events", "async"),
            ("orders", "orders-db", "sync"),
        ];
        let expected: Vec<(String, String, &str)> = expected
            .iter()
            .map(|(a, b, k)| (a.to_string(), b.to_string(), *k))
            .collect();
        assert_eq!(edges, expected);
        assert_eq!(snapshot.loops.len(), 1);
        assert_eq!(snapshot.loops[0].nodes.len(), 3);
    }

    #[test]
    fn the_incident_shifts_latency_and_amplifies_calls_to_inventory() {
        let inventory = |incident: bool| {
            let mut simulator = ShopSimulator::new(11);
            let snapshot = graph_of(&[simulator.request(NOW, 200, incident)]);
            let edge = snapshot
                .edges
                .into_iter()
                .find(|e| e.target == "inventory")
                .expect("edge");
            (edge.calls, edge.errors, edge.p50_ms)
        };
        let (calm_calls, calm_errors, calm_p50) = inventory(false);
        let (storm_calls, storm_errors, storm_p50) = inventory(true);
        assert_eq!(calm_calls, 200);
        assert!(storm_calls > 220, "failed calls are retried: {storm_calls}");
        assert!(
            storm_errors > calm_errors + 20,
            "{storm_errors} vs {calm_errors}"
        );
        assert!(
            storm_p50 > 3.0 * calm_p50,
            "latency shifts: {storm_p50} vs {calm_p50}"
        );
    }

    #[test]
    fn the_incident_follows_its_schedule() {
        let config = DemoConfig::default();
        assert!(config.incident_at(0));
        assert!(config.incident_at(59_000_000_000));
        assert!(!config.incident_at(61_000_000_000));
        assert!(config.incident_at(600_000_000_000 + 1));
    }
}

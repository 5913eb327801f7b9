//! The generic simulator: walks a [`Topology`] from its entries and turns each root trace into
//! OTLP spans with semantic-convention attributes. A plain function of a seed and the time it
//! is given: no clock, no I/O.
//!
//! ```text
//!  entry (SERVER) ──> edges that fire for the operation, one after another
//!     ├─ http/grpc: CLIENT ──> SERVER of the callee ──> its own edges (recursively)
//!     ├─ database / external API: one CLIENT span, nobody answers with spans
//!     └─ queue: PRODUCER ──> message waits ──> CONSUMER in a trace of its own, LINKED to the
//!                                             PRODUCER(s) of its batch ──> its own edges
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use crate::topology::{Edge, EdgeKind, Latency, NodeKind, Topology, firing, is_http_method};

const MS: u64 = 1_000_000;
/// Time between one call's end and the next call's start, and before a span's first call.
const GAP_NS: u64 = MS / 2;
/// Network time on each side of a synchronous call (CLIENT start to SERVER start, and back).
const HOP_NS: u64 = MS / 2;
/// Root traces of one request start spread over this window, ending this long before `now`.
const WINDOW_NS: u64 = 200 * MS;

/// Generates the traces of one topology. Ids never repeat within a simulator, and the same
/// seed given the same times yields the same requests.
#[derive(Debug)]
pub struct Simulator {
    topology: Arc<Topology>,
    /// Resource attributes of each node that is a service, by node index.
    resources: Vec<Option<Resource>>,
    entry_weight: f64,
    random: u64,
    next_id: u64,
}

/// A message waiting in a queue for its consumers.
struct Message {
    queue: usize,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    published_ns: u64,
}

/// What the walk of one request collects.
#[derive(Default)]
struct Build {
    /// Spans with the node index of their service, in the order they were made.
    spans: Vec<(usize, Span)>,
    messages: Vec<Message>,
}

/// How an incident changes an edge while it is on.
#[derive(Debug, Clone, Copy)]
struct Effect {
    latency_factor: f64,
    error_rate: Option<f64>,
    retries: Option<u32>,
}

impl Simulator {
    pub fn new(topology: Topology, seed: u64) -> Self {
        let resources = topology
            .nodes
            .iter()
            .map(|node| match &node.kind {
                NodeKind::Service { version, resource } => {
                    let mut attributes: Vec<(String, String)> = topology.resource.clone();
                    attributes.extend(resource.iter().cloned());
                    attributes.retain(|(key, _)| key != "service.name" && key != "service.version");
                    let mut merged: Vec<KeyValue> = vec![text("service.name", &node.name)];
                    if let Some(version) = version {
                        merged.push(text("service.version", version));
                    }
                    // A service's own value wins over the shared one: keep the last of each key.
                    for (index, (key, value)) in attributes.iter().enumerate() {
                        if !attributes[index + 1..]
                            .iter()
                            .any(|(later, _)| later == key)
                        {
                            merged.push(text(key, value));
                        }
                    }
                    Some(Resource {
                        attributes: merged,
                        ..Resource::default()
                    })
                }
                _ => None,
            })
            .collect();
        let entry_weight = topology.entries.iter().map(|e| e.weight).sum();
        Self {
            topology: Arc::new(topology),
            resources,
            entry_weight,
            random: mix(seed ^ 0x0DD_BA11) | 1,
            next_id: mix(seed),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// `traces` root traces starting just before `now_ns` (Unix ns), with the traces their
    /// messages start, as one request with a resource per service, the way SDKs batch them.
    /// The incidents on at `now_ns` apply.
    pub fn request(&mut self, now_ns: i64, traces: u32) -> ExportTraceServiceRequest {
        let effects = self.effects_at(now_ns);
        let mut build = Build::default();
        let first = (now_ns.max(0) as u64).saturating_sub(WINDOW_NS);
        let step = (WINDOW_NS / u64::from(traces.max(1))).min(MS);
        for i in 0..traces {
            self.root(&mut build, &effects, first + u64::from(i) * step);
        }
        // Consumers run after the producers of the whole request: a batch consumer links to
        // every message of its batch. Their own messages go round again.
        while !build.messages.is_empty() {
            let messages = std::mem::take(&mut build.messages);
            self.consume(&mut build, &effects, messages);
        }
        self.group(build.spans)
    }

    fn effects_at(&self, now_ns: i64) -> HashMap<usize, Effect> {
        let mut effects: HashMap<usize, Effect> = HashMap::new();
        for incident in self
            .topology
            .incidents
            .iter()
            .filter(|i| i.active_at(now_ns))
        {
            for &edge in &incident.edges {
                let effect = effects.entry(edge).or_insert(Effect {
                    latency_factor: 1.0,
                    error_rate: None,
                    retries: None,
                });
                effect.latency_factor *= incident.latency_factor;
                effect.error_rate = incident.error_rate.or(effect.error_rate);
                effect.retries = incident.retries.or(effect.retries);
            }
        }
        effects
    }

    fn root(&mut self, build: &mut Build, effects: &HashMap<usize, Effect>, start: u64) {
        let mut pick = self.uniform() * self.entry_weight;
        let mut chosen = self.topology.entries.len() - 1;
        for (index, entry) in self.topology.entries.iter().enumerate() {
            if pick < entry.weight {
                chosen = index;
                break;
            }
            pick -= entry.weight;
        }
        let topology = self.topology.clone();
        let entry = &topology.entries[chosen];
        let trace_id = self.trace_id();
        let span_id = self.span_id();
        let children_end = self.serve(
            build,
            effects,
            &trace_id,
            &span_id,
            entry.service,
            &entry.operation,
            start,
        );
        let end = children_end + self.latency(entry.latency, 1.0);
        let attributes = server_attributes(entry.protocol, &entry.operation, false);
        build.spans.push((
            entry.service,
            span(
                &trace_id,
                span_id,
                Vec::new(),
                SpanKind::Server,
                &entry.operation,
                (start, end),
                false,
                attributes,
            ),
        ));
    }

    /// Makes the calls of `operation` at `service`, one edge after another from `start`, as
    /// children of `parent`; returns when the last one ends.
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &mut self,
        build: &mut Build,
        effects: &HashMap<usize, Effect>,
        trace_id: &[u8],
        parent: &[u8],
        service: usize,
        operation: &str,
        start: u64,
    ) -> u64 {
        let topology = self.topology.clone();
        let mut at = start + GAP_NS;
        for (index, edge) in firing(&topology, service, operation) {
            if edge.chance < 1.0 && self.uniform() >= edge.chance {
                continue;
            }
            let effect = effects.get(&index).copied();
            // The `count` calls of a fan-out run in parallel; the edge is done when all are.
            let mut done = at;
            for _ in 0..edge.count {
                let end = self.call(build, effects, effect, trace_id, parent, edge, at);
                done = done.max(end);
            }
            at = done + GAP_NS;
        }
        at
    }

    /// One call over `edge` from `start`, with its retries; returns when the last attempt ends.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        build: &mut Build,
        effects: &HashMap<usize, Effect>,
        effect: Option<Effect>,
        trace_id: &[u8],
        parent: &[u8],
        edge: &Edge,
        start: u64,
    ) -> u64 {
        let latency_factor = effect.map_or(1.0, |e| e.latency_factor);
        let error_rate = effect.and_then(|e| e.error_rate).unwrap_or(edge.error_rate);
        let retries = effect.and_then(|e| e.retries).unwrap_or(edge.retries);
        let mut at = start;
        for _ in 0..=retries {
            let failed = error_rate > 0.0 && self.uniform() < error_rate;
            let end = match edge.kind {
                EdgeKind::Http | EdgeKind::Grpc => self.sync_call(
                    build,
                    effects,
                    trace_id,
                    parent,
                    edge,
                    at,
                    failed,
                    latency_factor,
                ),
                EdgeKind::Database | EdgeKind::External | EdgeKind::Publish => {
                    let end = at + self.latency(edge.latency, latency_factor);
                    let span_id = self.span_id();
                    let kind = if edge.kind == EdgeKind::Publish {
                        build.messages.push(Message {
                            queue: edge.to,
                            trace_id: trace_id.to_vec(),
                            span_id: span_id.clone(),
                            published_ns: end,
                        });
                        SpanKind::Producer
                    } else {
                        SpanKind::Client
                    };
                    let attributes = self.leaf_attributes(edge, failed);
                    build.spans.push((
                        edge.from,
                        span(
                            trace_id,
                            span_id,
                            parent.to_vec(),
                            kind,
                            &edge.operation,
                            (at, end),
                            failed,
                            attributes,
                        ),
                    ));
                    end
                }
                // Consumers start their own traces, from `consume`.
                EdgeKind::Consume => at,
            };
            at = end + GAP_NS;
            if !failed {
                return end;
            }
        }
        at - GAP_NS
    }

    /// A CLIENT span, the callee's SERVER span inside it, and the callee's own calls.
    #[allow(clippy::too_many_arguments)]
    fn sync_call(
        &mut self,
        build: &mut Build,
        effects: &HashMap<usize, Effect>,
        trace_id: &[u8],
        parent: &[u8],
        edge: &Edge,
        start: u64,
        failed: bool,
        latency_factor: f64,
    ) -> u64 {
        let client_id = self.span_id();
        let server_id = self.span_id();
        let server_start = start + HOP_NS;
        let children_end = self.serve(
            build,
            effects,
            trace_id,
            &server_id,
            edge.to,
            &edge.operation,
            server_start,
        );
        let server_end = children_end + self.latency(edge.latency, latency_factor);
        let client_end = server_end + HOP_NS;
        let client_attributes = self.client_attributes(edge, failed);
        build.spans.push((
            edge.from,
            span(
                trace_id,
                client_id.clone(),
                parent.to_vec(),
                SpanKind::Client,
                &edge.operation,
                (start, client_end),
                failed,
                client_attributes,
            ),
        ));
        build.spans.push((
            edge.to,
            span(
                trace_id,
                server_id,
                client_id,
                SpanKind::Server,
                &edge.operation,
                (server_start, server_end),
                failed,
                server_attributes(edge.kind, &edge.operation, failed),
            ),
        ));
        client_end
    }

    /// Delivers `messages` to every consumer of their queue, `batch` messages per CONSUMER
    /// span, each in a trace of its own that links to the producers.
    fn consume(
        &mut self,
        build: &mut Build,
        effects: &HashMap<usize, Effect>,
        messages: Vec<Message>,
    ) {
        let topology = self.topology.clone();
        let consumers = topology
            .edges
            .iter()
            .enumerate()
            .filter(|(_, edge)| edge.kind == EdgeKind::Consume);
        for (index, edge) in consumers {
            let effect = effects.get(&index).copied();
            let waiting: Vec<&Message> = messages.iter().filter(|m| m.queue == edge.from).collect();
            for batch in waiting.chunks(edge.batch as usize) {
                let latency_factor = effect.map_or(1.0, |e| e.latency_factor);
                let error_rate = effect.and_then(|e| e.error_rate).unwrap_or(edge.error_rate);
                let failed = error_rate > 0.0 && self.uniform() < error_rate;
                let last_publish = batch.iter().map(|m| m.published_ns).max().unwrap_or(0);
                let start = last_publish + self.latency(edge.delay, latency_factor);
                let trace_id = self.trace_id();
                let span_id = self.span_id();
                let children_end = self.serve(
                    build,
                    effects,
                    &trace_id,
                    &span_id,
                    edge.to,
                    &edge.operation,
                    start,
                );
                let end = children_end + self.latency(edge.latency, latency_factor);
                let mut consumer = span(
                    &trace_id,
                    span_id,
                    Vec::new(),
                    SpanKind::Consumer,
                    &edge.operation,
                    (start, end),
                    failed,
                    self.consumer_attributes(edge, batch.len()),
                );
                consumer.links = batch
                    .iter()
                    .map(|message| Link {
                        trace_id: message.trace_id.clone(),
                        span_id: message.span_id.clone(),
                        ..Link::default()
                    })
                    .collect();
                build.spans.push((edge.to, consumer));
            }
        }
    }

    fn group(&self, spans: Vec<(usize, Span)>) -> ExportTraceServiceRequest {
        let mut order: Vec<usize> = Vec::new();
        let mut by_service: HashMap<usize, Vec<Span>> = HashMap::new();
        for (service, span) in spans {
            by_service
                .entry(service)
                .or_insert_with(|| {
                    order.push(service);
                    Vec::new()
                })
                .push(span);
        }
        ExportTraceServiceRequest {
            resource_spans: order
                .into_iter()
                .map(|service| ResourceSpans {
                    resource: self.resources[service].clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "flowscope-demo".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            ..InstrumentationScope::default()
                        }),
                        spans: by_service.remove(&service).unwrap_or_default(),
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                })
                .collect(),
        }
    }

    fn client_attributes(&self, edge: &Edge, failed: bool) -> Vec<KeyValue> {
        let callee = &self.topology.nodes[edge.to].name;
        match edge.kind {
            EdgeKind::Grpc => {
                let (service, method) = edge.operation.split_once('/').unwrap_or_default();
                vec![
                    text("rpc.system", "grpc"),
                    text("rpc.service", service),
                    text("rpc.method", method),
                    text("server.address", callee),
                    int("server.port", 50051),
                    int("rpc.grpc.status_code", if failed { 14 } else { 0 }),
                ]
            }
            _ => {
                let (method, route) = split_http(&edge.operation);
                vec![
                    text("http.request.method", method),
                    text("http.route", route),
                    text("url.full", &format!("http://{callee}:8080{route}")),
                    text("server.address", callee),
                    int("server.port", 8080),
                    int("http.response.status_code", if failed { 503 } else { 200 }),
                ]
            }
        }
    }

    /// A CLIENT span to a database or an external API, or a PRODUCER span.
    fn leaf_attributes(&mut self, edge: &Edge, failed: bool) -> Vec<KeyValue> {
        let topology = self.topology.clone();
        let target = &topology.nodes[edge.to];
        match &target.kind {
            NodeKind::Database { system } => {
                let (operation, collection) = edge
                    .operation
                    .split_once(' ')
                    .unwrap_or((edge.operation.as_str(), ""));
                // No server.address: the graph names a database by db.name, and would name it
                // by the address if there were one.
                let mut attributes = vec![
                    text("db.system", system),
                    text("db.name", &target.name),
                    text("db.namespace", &target.name),
                    text("db.operation.name", operation),
                ];
                if !collection.is_empty() {
                    attributes.push(text("db.collection.name", collection));
                }
                attributes
            }
            NodeKind::External { address } => {
                let (method, path) = split_http(&edge.operation);
                let mut attributes = vec![
                    text("http.request.method", method),
                    text("url.full", &format!("https://{address}{path}")),
                    text("server.address", address),
                    int("server.port", 443),
                    int("http.response.status_code", if failed { 503 } else { 200 }),
                ];
                if *address != target.name {
                    attributes.push(text("peer.service", &target.name));
                }
                attributes
            }
            NodeKind::Queue { system } => {
                let size = 200 + (self.next() % 400) as i64;
                vec![
                    text("messaging.system", system),
                    text("messaging.destination.name", &target.name),
                    text("messaging.operation.type", "publish"),
                    text("messaging.operation.name", "publish"),
                    int("messaging.message.body.size", size),
                ]
            }
            NodeKind::Service { .. } => Vec::new(),
        }
    }

    fn consumer_attributes(&self, edge: &Edge, messages: usize) -> Vec<KeyValue> {
        let queue = &self.topology.nodes[edge.from];
        let system = match &queue.kind {
            NodeKind::Queue { system } => system.as_str(),
            _ => "",
        };
        let mut attributes = vec![
            text("messaging.system", system),
            text("messaging.destination.name", &queue.name),
            text("messaging.operation.type", "process"),
            text("messaging.operation.name", "process"),
            text(
                "messaging.consumer.group.name",
                &self.topology.nodes[edge.to].name,
            ),
        ];
        if messages > 1 {
            attributes.push(int("messaging.batch.message_count", messages as i64));
        }
        attributes
    }

    // ---- randomness and ids ----

    fn next(&mut self) -> u64 {
        // xorshift64: deterministic for a seed, good enough for jitter.
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        self.random
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A latency drawn from `profile`, scaled by `factor`, in ns (at least 1 µs).
    fn latency(&mut self, profile: Latency, factor: f64) -> u64 {
        // Irwin–Hall: the sum of four uniforms, centred and scaled, is close to a standard
        // normal, and cheap.
        let normal = ((0..4).map(|_| self.uniform()).sum::<f64>() - 2.0) * 3f64.sqrt();
        let nanos = profile.median_ns * factor * (profile.spread * normal).exp();
        nanos.max(1_000.0) as u64
    }

    fn id(&mut self) -> u64 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            // mix is a bijection: distinct counters give distinct ids. Zero is not a valid id.
            let id = mix(self.next_id);
            if id != 0 {
                return id;
            }
        }
    }

    fn span_id(&mut self) -> Vec<u8> {
        self.id().to_be_bytes().to_vec()
    }

    fn trace_id(&mut self) -> Vec<u8> {
        let mut id = self.span_id();
        id.extend(self.span_id());
        id
    }
}

/// splitmix64's finaliser: a bijection on `u64`, so distinct inputs give distinct,
/// random-looking outputs.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn split_http(operation: &str) -> (&str, &str) {
    match operation.split_once(' ') {
        Some((method, path)) if is_http_method(method) => (method, path),
        _ => ("GET", operation),
    }
}

fn server_attributes(protocol: EdgeKind, operation: &str, failed: bool) -> Vec<KeyValue> {
    match protocol {
        EdgeKind::Grpc => {
            let (service, method) = operation.split_once('/').unwrap_or_default();
            vec![
                text("rpc.system", "grpc"),
                text("rpc.service", service),
                text("rpc.method", method),
                int("rpc.grpc.status_code", if failed { 14 } else { 0 }),
            ]
        }
        _ => {
            let (method, route) = split_http(operation);
            vec![
                text("http.request.method", method),
                text("http.route", route),
                text("url.path", route),
                text("url.scheme", "http"),
                int("http.response.status_code", if failed { 500 } else { 200 }),
            ]
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn span(
    trace_id: &[u8],
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    kind: SpanKind,
    name: &str,
    (start, end): (u64, u64),
    failed: bool,
    attributes: Vec<KeyValue>,
) -> Span {
    Span {
        trace_id: trace_id.to_vec(),
        span_id,
        parent_span_id,
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status: Some(Status {
            code: if failed {
                StatusCode::Error
            } else {
                StatusCode::Unset
            } as i32,
            message: if failed {
                "upstream failed".into()
            } else {
                String::new()
            },
        }),
        ..Span::default()
    }
}

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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use flowscope_graph::{GraphConfig, LiveGraph, Snapshot};
    use prost::Message as _;

    /// On a ten-minute mark: the shop's incident is on for the next 60 s.
    const INCIDENT: i64 = 1_764_396_000_000_000_000;
    /// Five minutes later: calm.
    const CALM: i64 = INCIDENT + 300_000_000_000;

    fn preset(name: &str) -> Topology {
        Topology::preset(name).unwrap_or_else(|error| panic!("{error}"))
    }

    /// The requests as the server would see them: encoded, decoded by the collector, and fed
    /// to the real live graph.
    fn graph_of(requests: &[ExportTraceServiceRequest], now: i64) -> Snapshot {
        let mut graph = LiveGraph::new(GraphConfig::default());
        for request in requests {
            let decoded =
                flowscope_collector::decode_protobuf(&request.encode_to_vec()).expect("decodes");
            assert_eq!(decoded.rejected_spans, 0, "{}", decoded.error_message);
            graph.ingest(&decoded.batch.expect("spans"), now);
        }
        graph.advance(now + 60_000_000_000);
        graph.snapshot(now - 3_600_000_000_000, now + 3_600_000_000_000)
    }

    fn edges(snapshot: &Snapshot) -> Vec<(String, String, &'static str)> {
        let mut edges: Vec<_> = snapshot
            .edges
            .iter()
            .map(|e| (e.source.clone(), e.target.clone(), e.kind.as_str()))
            .collect();
        edges.sort();
        edges
    }

    fn owned(edges: &[(&str, &str, &'static str)]) -> Vec<(String, String, &'static str)> {
        edges
            .iter()
            .map(|(a, b, k)| (a.to_string(), b.to_string(), *k))
            .collect()
    }

    fn spans(request: &ExportTraceServiceRequest) -> impl Iterator<Item = &Span> {
        request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
    }

    #[test]
    fn the_shop_has_its_edges_its_virtual_peers_and_a_loop_through_the_queue() {
        let mut simulator = Simulator::new(preset("shop"), 7);
        let snapshot = graph_of(&[simulator.request(CALM, 20)], CALM);
        let expected = owned(&[
            ("billing", "orders", "sync"),
            ("gateway", "orders", "sync"),
            ("order-events", "billing", "async"),
            ("orders", "api.payments.example", "sync"),
            ("orders", "inventory", "sync"),
            ("orders", "order-events", "async"),
            ("orders", "orders-db", "sync"),
        ]);
        assert_eq!(edges(&snapshot), expected);
        assert_eq!(simulator.topology().graph_edges(), expected);
        assert_eq!(snapshot.loops.len(), 1);
        assert_eq!(snapshot.loops[0].nodes.len(), 3);
        // Billing's CONSUMER starts a trace of its own linked to the PRODUCER: the flows that
        // came back are counted across that link.
        assert!(snapshot.loops[0].trace_loops > 0, "{:?}", snapshot.loops[0]);
    }

    #[test]
    fn the_incident_shifts_latency_and_amplifies_calls_to_inventory() {
        let inventory = |now: i64| {
            let mut simulator = Simulator::new(preset("shop"), 11);
            let snapshot = graph_of(&[simulator.request(now, 200)], now);
            let edge = snapshot
                .edges
                .into_iter()
                .find(|e| e.target == "inventory")
                .expect("edge");
            (edge.calls, edge.errors, edge.p50_ms)
        };
        let (calm_calls, calm_errors, calm_p50) = inventory(CALM);
        let (storm_calls, storm_errors, storm_p50) = inventory(INCIDENT + 1);
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
        let shop = preset("shop");
        let check = |offset_s: i64, expected: bool| {
            let now = INCIDENT + offset_s * 1_000_000_000;
            assert_eq!(
                shop.incident_at(now),
                expected,
                "{offset_s} s past the mark"
            );
        };
        check(0, true);
        check(59, true);
        check(61, false);
        check(300, false);
        check(600, true);
        check(-1, false);
    }

    #[test]
    fn the_city_gives_every_declared_edge_and_its_three_loops_through_the_real_graph() {
        let topology = preset("city");
        let mut simulator = Simulator::new(topology.clone(), 3);
        let requests: Vec<_> = (0..5).map(|i| simulator.request(CALM + i, 200)).collect();
        let snapshot = graph_of(&requests, CALM);
        assert_eq!(edges(&snapshot), topology.graph_edges());

        let services: HashSet<&str> = requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .filter_map(|r| r.resource.as_ref())
            .flat_map(|r| &r.attributes)
            .filter(|kv| kv.key == "service.name")
            .filter_map(|kv| match &kv.value.as_ref()?.value {
                Some(any_value::Value::StringValue(name)) => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(services.len(), 40, "every service sends spans");
        assert_eq!(snapshot.nodes.len(), topology.node_names().count());
        assert_eq!(snapshot.edges.len(), 81);

        let mut loops: Vec<Vec<String>> = snapshot
            .loops
            .iter()
            .map(|l| {
                let mut nodes: Vec<String> = l.nodes.iter().map(|n| n.to_string()).collect();
                nodes.sort();
                nodes
            })
            .collect();
        loops.sort();
        let expected: Vec<Vec<String>> = [
            vec!["dispatch", "ride-events", "rides"],
            vec!["dispatch", "rides"],
            vec!["payment-events", "payments", "ride-events", "rides"],
        ]
        .iter()
        .map(|l| l.iter().map(|n| n.to_string()).collect())
        .collect();
        assert_eq!(loops, expected);
        // The two loops through queues, whose consumers start traces of their own linked to
        // their producers, count the flows that came back across those links. The third,
        // rides -> dispatch -> rides, is a graph loop no flow goes round: rides' call to
        // dispatch and dispatch's call back (after consuming ride-events) are on different
        // branches of the flow.
        for feedback in &snapshot.loops {
            let through_a_queue = feedback.nodes.iter().any(|n| n.ends_with("-events"));
            assert_eq!(feedback.trace_loops > 0, through_a_queue, "{feedback:?}");
        }
    }

    #[test]
    fn batch_consumers_link_to_every_producer_of_their_batch() {
        let mut simulator = Simulator::new(preset("city"), 5);
        let request = simulator.request(CALM, 200);
        let audit_batches: Vec<&Span> = spans(&request)
            .filter(|s| s.kind == SpanKind::Consumer as i32 && s.name == "audit-log process")
            .collect();
        let publishes = spans(&request)
            .filter(|s| s.kind == SpanKind::Producer as i32 && s.name == "audit-log publish")
            .count();
        assert!(
            publishes >= 200,
            "auth publishes once per verify: {publishes}"
        );
        assert_eq!(audit_batches.len(), publishes.div_ceil(20));
        assert_eq!(audit_batches[0].links.len(), 20);
        let linked: usize = audit_batches.iter().map(|s| s.links.len()).sum();
        assert_eq!(linked, publishes);
    }

    #[test]
    fn ids_never_repeat_and_the_same_seed_and_times_give_the_same_requests() {
        let mut first = Simulator::new(preset("city"), 9);
        let mut second = Simulator::new(preset("city"), 9);
        let mut seen = HashSet::new();
        let mut traces = HashSet::new();
        for i in 0..3 {
            let a = first.request(CALM + i, 50);
            let b = second.request(CALM + i, 50);
            assert_eq!(a, b, "request {i}");
            for span in spans(&a) {
                assert!(seen.insert(span.span_id.clone()), "span id repeated");
                assert_eq!(span.span_id.len(), 8);
                assert_eq!(span.trace_id.len(), 16);
                traces.insert(span.trace_id.clone());
            }
        }
        assert!(traces.len() >= 150);
        let mut other = Simulator::new(preset("city"), 10);
        assert_ne!(other.request(CALM, 50), first.request(CALM, 50));
    }

    #[test]
    fn spans_carry_semantic_convention_attributes_and_resources() {
        let mut simulator = Simulator::new(preset("city"), 1);
        let request = simulator.request(CALM, 100);
        let attribute = |span: &Span, key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| match &kv.value.as_ref()?.value {
                    Some(any_value::Value::StringValue(text)) => Some(text.clone()),
                    Some(any_value::Value::IntValue(number)) => Some(number.to_string()),
                    _ => None,
                })
        };
        let find = |name: &str, kind: SpanKind| {
            spans(&request)
                .find(|s| s.name == name && s.kind == kind as i32)
                .unwrap_or_else(|| panic!("no {kind:?} span {name}"))
        };
        let grpc = find("city.Auth/Verify", SpanKind::Client);
        assert_eq!(attribute(grpc, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(attribute(grpc, "rpc.method").as_deref(), Some("Verify"));
        let db = find("SELECT users", SpanKind::Client);
        assert_eq!(attribute(db, "db.system").as_deref(), Some("postgresql"));
        assert_eq!(attribute(db, "db.name").as_deref(), Some("users-db"));
        assert_eq!(attribute(db, "server.address"), None);
        let external = find("GET /v1/geocode", SpanKind::Client);
        assert_eq!(
            attribute(external, "server.address").as_deref(),
            Some("api.maps.example")
        );
        assert_eq!(
            attribute(external, "peer.service").as_deref(),
            Some("maps-api")
        );
        let server = find("POST /dispatch", SpanKind::Server);
        assert_eq!(
            attribute(server, "http.route").as_deref(),
            Some("/dispatch")
        );

        let payments = request
            .resource_spans
            .iter()
            .filter_map(|r| r.resource.as_ref())
            .find(|r| {
                r.attributes.iter().any(|kv| {
                    kv.key == "service.name"
                        && kv.value.as_ref().and_then(|v| v.value.as_ref())
                            == Some(&any_value::Value::StringValue("payments".into()))
                })
            })
            .expect("payments resource");
        let resource: HashMap<&str, String> = payments
            .attributes
            .iter()
            .filter_map(|kv| match &kv.value.as_ref()?.value {
                Some(any_value::Value::StringValue(text)) => Some((kv.key.as_str(), text.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(resource["service.version"], "8.1.0");
        assert_eq!(resource["service.namespace"], "finance", "own value wins");
        assert_eq!(resource["deployment.environment.name"], "staging");
    }
}

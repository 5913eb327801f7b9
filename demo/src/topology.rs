//! The topology file: a small TOML description of a simulated event-driven system (services,
//! databases, external APIs, queues, the edges between them and a schedule of incidents),
//! parsed and checked once into a [`Topology`] that the simulator walks. The format is
//! documented in `demo/README.md`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use flowscope_base::parse_duration;
use serde::Deserialize;

use crate::Error;

/// The presets, embedded in the binary: `(name, file text)`.
const PRESETS: [(&str, &str); 2] = [
    ("shop", include_str!("../presets/shop.toml")),
    ("city", include_str!("../presets/city.toml")),
];

/// Most spans one root trace (with the traces its messages start) may make: a guard against a
/// fan-out that multiplies down the call tree.
const MAX_SPANS_PER_TRACE: f64 = 10_000.0;

/// A checked topology: every name resolves, every number is in range, and no chain of calls
/// can go on forever.
#[derive(Debug, Clone)]
pub struct Topology {
    pub name: String,
    /// Root traces per second that `serve --demo` starts outside incidents.
    pub traces_per_second: f64,
    pub(crate) nodes: Vec<Node>,
    pub(crate) edges: Vec<Edge>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) incidents: Vec<Incident>,
    /// Resource attributes every service has, before its own.
    pub(crate) resource: Vec<(String, String)>,
    /// The edges leaving each node, by the node's index: a large generated system has
    /// 100,000 edges, and a span must not look at every one.
    pub(crate) leaving: Vec<Vec<usize>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub name: String,
    pub kind: NodeKind,
}

#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    Service {
        version: Option<String>,
        resource: Vec<(String, String)>,
    },
    Database {
        system: String,
    },
    External {
        /// `server.address`; when it differs from the node's name, the name is `peer.service`.
        address: String,
    },
    Queue {
        system: String,
    },
}

impl NodeKind {
    fn word(&self) -> &'static str {
        match self {
            Self::Service { .. } => "service",
            Self::Database { .. } => "database",
            Self::External { .. } => "external API",
            Self::Queue { .. } => "queue",
        }
    }
}

/// What an edge does, decided by the kinds of its two ends (and `protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeKind {
    /// Service to service over HTTP: CLIENT and SERVER spans.
    Http,
    /// Service to service over gRPC: CLIENT and SERVER spans.
    Grpc,
    /// Service to database: a CLIENT span with `db.system`; the database sends nothing.
    Database,
    /// Service to an external API over HTTP: a CLIENT span only.
    External,
    /// Service to queue: a PRODUCER span.
    Publish,
    /// Queue to service: a CONSUMER span in a trace of its own, linked to the producers.
    Consume,
}

#[derive(Debug, Clone)]
pub(crate) struct Edge {
    /// `from -> to`, as errors and incidents name it.
    pub label: String,
    pub from: usize,
    pub to: usize,
    pub kind: EdgeKind,
    /// Fires only while `from` serves this operation; every operation when absent.
    pub when: Option<String>,
    /// The operation called: `POST /orders`, `shop.Inventory/Reserve`, `INSERT orders`,
    /// `order-events publish`, `order-events process`.
    pub operation: String,
    pub latency: Latency,
    pub error_rate: f64,
    /// Calls made in parallel each time the edge fires (fan-out).
    pub count: u32,
    /// Probability that the edge fires at all (a cache miss, a rare path).
    pub chance: f64,
    /// Further attempts after a failed call.
    pub retries: u32,
    /// Consume: publish-to-consume delay.
    pub delay: Latency,
    /// Consume: messages per CONSUMER span (each one a link).
    pub batch: u32,
}

/// A latency profile: log-normal around `median_ns`; `spread` is the standard deviation of its
/// logarithm (0 is constant, 0.5 puts p99 at about 3.2 times the median).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    pub median_ns: f64,
    pub spread: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub service: usize,
    pub operation: String,
    pub protocol: EdgeKind,
    pub weight: f64,
    pub latency: Latency,
}

#[derive(Debug, Clone)]
pub(crate) struct Incident {
    pub edges: Vec<usize>,
    pub every_ns: i64,
    pub length_ns: i64,
    pub offset_ns: i64,
    pub latency_factor: f64,
    pub error_rate: Option<f64>,
    pub retries: Option<u32>,
    pub traffic_factor: f64,
}

impl Incident {
    /// Whether the incident is on at `now_ns` (Unix ns): from every multiple of `every`, plus
    /// `offset`, for `length`.
    pub fn active_at(&self, now_ns: i64) -> bool {
        (now_ns - self.offset_ns).rem_euclid(self.every_ns.max(1)) < self.length_ns
    }
}

impl Topology {
    /// The names of the embedded presets.
    pub fn preset_names() -> impl Iterator<Item = &'static str> {
        PRESETS.iter().map(|(name, _)| *name)
    }

    /// An embedded preset by name.
    pub fn preset(name: &str) -> Result<Self, Error> {
        let (name, text) = PRESETS
            .iter()
            .find(|(preset, _)| *preset == name)
            .ok_or_else(|| Error::Topology {
                file: name.to_string(),
                message: format!("no such preset; presets are {}", preset_list()),
            })?;
        Self::parse(text, &format!("{name}.toml"))
    }

    /// A preset name, `generated:N`, or else the path of a topology file.
    pub fn load(preset_or_path: &str) -> Result<Self, Error> {
        if Self::preset_names().any(|name| name == preset_or_path) {
            return Self::preset(preset_or_path);
        }
        if let Some(count) = preset_or_path.strip_prefix("generated:") {
            let error = |message: String| Error::Topology {
                file: preset_or_path.to_string(),
                message,
            };
            let services: usize = count.parse().map_err(|_| {
                error(format!(
                    "'{count}' is not a number of services: write generated:N, e.g. generated:10000"
                ))
            })?;
            if !(GENERATED_MIN..=GENERATED_MAX).contains(&services) {
                return Err(error(format!(
                    "a generated system has {GENERATED_MIN} to {GENERATED_MAX} services, not {services}"
                )));
            }
            return resolve(generate(services)).map_err(error);
        }
        match std::fs::read_to_string(preset_or_path) {
            Ok(text) => Self::parse(&text, preset_or_path),
            Err(error) => Err(Error::Topology {
                file: preset_or_path.to_string(),
                message: format!(
                    "not a preset ({}) and not a readable file: {error}",
                    preset_list()
                ),
            }),
        }
    }

    /// Parses and checks a topology file; `file` names it in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Self, Error> {
        let raw: FileFormat = toml::from_str(text).map_err(|error| Error::Topology {
            file: file.to_string(),
            message: error.message().to_string()
                + &error
                    .span()
                    .map(|span| format!(" (line {})", line_of(text, span.start)))
                    .unwrap_or_default(),
        })?;
        resolve(raw).map_err(|message| Error::Topology {
            file: file.to_string(),
            message,
        })
    }

    /// Root traces per second at `now_ns`: the base rate times any active incident's surge.
    pub fn traces_per_second_at(&self, now_ns: i64) -> f64 {
        self.incidents
            .iter()
            .filter(|incident| incident.active_at(now_ns))
            .fold(self.traces_per_second, |rate, incident| {
                rate * incident.traffic_factor
            })
    }

    /// Whether any scheduled incident is on at `now_ns`.
    pub fn incident_at(&self, now_ns: i64) -> bool {
        self.incidents.iter().any(|i| i.active_at(now_ns))
    }

    /// Moves every incident's schedule so that it starts at `start_ns` (and then recurs as
    /// before): a short run can show an incident without waiting for the clock.
    pub fn start_incidents_at(&mut self, start_ns: i64) {
        for incident in &mut self.incidents {
            incident.offset_ns = start_ns.rem_euclid(incident.every_ns.max(1));
        }
    }

    /// How many incidents the topology schedules.
    pub fn incident_count(&self) -> usize {
        self.incidents.len()
    }

    /// Every node a span can name as its service, database, external peer or queue.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|node| node.name.as_str())
    }

    /// The edges as `(from, to, "sync" | "async")`, the way the live graph names them: calls
    /// are sync, publishing and consuming are async.
    pub fn graph_edges(&self) -> Vec<(String, String, &'static str)> {
        let mut edges: Vec<_> = self
            .edges
            .iter()
            .map(|edge| {
                let kind = match edge.kind {
                    EdgeKind::Publish | EdgeKind::Consume => "async",
                    _ => "sync",
                };
                (
                    self.nodes[edge.from].name.clone(),
                    self.nodes[edge.to].name.clone(),
                    kind,
                )
            })
            .collect();
        edges.sort();
        edges.dedup();
        edges
    }
}

fn preset_list() -> String {
    Topology::preset_names()
        .chain(["generated:N"])
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sizes `generated:N` takes.
const GENERATED_MIN: usize = 10;
const GENERATED_MAX: usize = 100_000;
/// Layers of a generated system: entry services call the next layer, and so on down.
const GENERATED_LAYERS: usize = 6;
/// Services per namespace.
const GENERATED_NAMESPACE: usize = 50;
/// Operations a generated service serves (besides its queues'), and the calls each makes.
const GENERATED_OPERATIONS: usize = 5;
const GENERATED_CALLS_PER_OPERATION: usize = 2;

/// `generated:N`: a seeded system of `services` services in namespaces of 50, in six layers
/// (each service's operations call two services of the next layer), a database per
/// namespace that every fourth service queries, and about one loop per 2,000 services
/// through a queue (a leaf service publishes, a service of the second layer that reaches it
/// consumes). The same N gives the same system.
fn generate(services: usize) -> FileFormat {
    // xorshift64*, seeded by the size: no dependency, the same system every time.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ services as u64;
    let mut next = move |below: usize| -> usize {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % below.max(1)
    };
    let name = |i: usize| format!("s{i:05}");
    let namespace = |i: usize| format!("ns-{:03}", i / GENERATED_NAMESPACE);
    let layer_of = |i: usize| i * GENERATED_LAYERS / services;
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); GENERATED_LAYERS];
    for i in 0..services {
        layers[layer_of(i)].push(i);
    }
    let mut raw = FileFormat {
        name: Some(format!("generated:{services}")),
        resource: BTreeMap::from([("deployment.environment.name".into(), "generated".into())]),
        traffic: TrafficFormat {
            rate: Some((services as f64 / 20.0).max(20.0)),
        },
        entries: Vec::new(),
        services: (0..services)
            .map(|i| ServiceFormat {
                name: name(i),
                version: None,
                resource: BTreeMap::from([
                    ("service.namespace".into(), namespace(i)),
                    ("k8s.namespace.name".into(), namespace(i)),
                ]),
            })
            .collect(),
        databases: (0..services.div_ceil(GENERATED_NAMESPACE))
            .map(|n| DatabaseFormat {
                name: format!("db-{:03}", n),
                system: "postgresql".into(),
            })
            .collect(),
        externals: Vec::new(),
        queues: Vec::new(),
        edges: Vec::new(),
        incidents: Vec::new(),
    };
    let edge = |edge: String, when: Option<String>, operation: Option<String>| EdgeFormat {
        edge,
        when,
        operation,
        protocol: None,
        latency: Some("2ms".into()),
        spread: None,
        errors: None,
        count: None,
        chance: None,
        retries: None,
        delay: None,
        batch: None,
    };
    // What each service serves, filled layer by layer from its callers' edges.
    let mut served: Vec<Vec<String>> = vec![Vec::new(); services];
    let mut calls: Vec<Vec<usize>> = vec![Vec::new(); services];
    for &entry in &layers[0] {
        for operation in ["GET /home", "GET /search"] {
            raw.entries.push(EntryFormat {
                service: name(entry),
                operation: operation.into(),
                protocol: None,
                weight: Some(1.0),
                latency: Some("3ms".into()),
                spread: None,
            });
            served[entry].push(operation.into());
        }
    }
    for layer in 0..GENERATED_LAYERS - 1 {
        let below = &layers[layer + 1];
        for &from in &layers[layer] {
            for when in served[from].clone() {
                for _ in 0..GENERATED_CALLS_PER_OPERATION {
                    let to = below[next(below.len())];
                    let operation = format!("GET /op{}", next(GENERATED_OPERATIONS));
                    if !served[to].contains(&operation) {
                        served[to].push(operation.clone());
                    }
                    calls[from].push(to);
                    raw.edges.push(edge(
                        format!("{} -> {}", name(from), name(to)),
                        Some(when.clone()),
                        Some(operation),
                    ));
                }
            }
            if from % 4 == 0
                && let Some(when) = served[from].first().cloned()
            {
                raw.edges.push(edge(
                    format!("{} -> db-{:03}", name(from), from / GENERATED_NAMESPACE),
                    Some(when),
                    Some("SELECT items".into()),
                ));
            }
        }
    }
    // Loops through queues: down from a second-layer service to a leaf, back by a queue.
    for k in 0..(services / 2_000).max(1) {
        let Some(&start) = layers[1].get(next(layers[1].len())) else {
            break;
        };
        let mut at = start;
        while !calls[at].is_empty() {
            at = calls[at][next(calls[at].len())];
        }
        let (Some(when), true) = (served[at].first().cloned(), at != start) else {
            continue;
        };
        let queue = format!("loop-{k}");
        raw.queues.push(QueueFormat {
            name: queue.clone(),
            system: "kafka".into(),
        });
        raw.edges
            .push(edge(format!("{} -> {queue}", name(at)), Some(when), None));
        raw.edges
            .push(edge(format!("{queue} -> {}", name(start)), None, None));
    }
    raw
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

// ---- The file as written ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    name: Option<String>,
    #[serde(default)]
    resource: BTreeMap<String, String>,
    #[serde(default)]
    traffic: TrafficFormat,
    #[serde(default)]
    entries: Vec<EntryFormat>,
    #[serde(default)]
    services: Vec<ServiceFormat>,
    #[serde(default)]
    databases: Vec<DatabaseFormat>,
    #[serde(default)]
    externals: Vec<ExternalFormat>,
    #[serde(default)]
    queues: Vec<QueueFormat>,
    #[serde(default)]
    edges: Vec<EdgeFormat>,
    #[serde(default)]
    incidents: Vec<IncidentFormat>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrafficFormat {
    rate: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFormat {
    service: String,
    operation: String,
    protocol: Option<String>,
    weight: Option<f64>,
    latency: Option<String>,
    spread: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFormat {
    name: String,
    version: Option<String>,
    #[serde(default)]
    resource: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseFormat {
    name: String,
    system: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalFormat {
    name: String,
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueFormat {
    name: String,
    system: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeFormat {
    edge: String,
    when: Option<String>,
    operation: Option<String>,
    protocol: Option<String>,
    latency: Option<String>,
    spread: Option<f64>,
    errors: Option<f64>,
    count: Option<u32>,
    chance: Option<f64>,
    retries: Option<u32>,
    delay: Option<String>,
    batch: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentFormat {
    edge: String,
    every: String,
    length: String,
    offset: Option<String>,
    latency: Option<f64>,
    errors: Option<f64>,
    retries: Option<u32>,
    traffic: Option<f64>,
}

// ---- Checking ----

const DEFAULT_LATENCY: &str = "5ms";
const DEFAULT_PUBLISH_LATENCY: &str = "1ms";
const DEFAULT_DELAY: &str = "10ms";
const DEFAULT_SPREAD: f64 = 0.25;

fn resolve(raw: FileFormat) -> Result<Topology, String> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut add = |name: &str, kind: NodeKind| -> Result<(), String> {
        if name.trim().is_empty() || name.contains("->") {
            return Err(format!(
                "{} name '{name}' must be non-empty and must not contain '->'",
                kind.word()
            ));
        }
        if let Some(existing) = nodes.iter().find(|n| n.name == name) {
            return Err(format!(
                "'{name}' is declared twice (as a {} and as a {})",
                existing.kind.word(),
                kind.word()
            ));
        }
        nodes.push(Node {
            name: name.to_string(),
            kind,
        });
        Ok(())
    };
    for service in raw.services {
        add(
            &service.name,
            NodeKind::Service {
                version: service.version,
                resource: service.resource.into_iter().collect(),
            },
        )?;
    }
    for database in raw.databases {
        add(
            &database.name,
            NodeKind::Database {
                system: database.system,
            },
        )?;
    }
    for external in raw.externals {
        let address = external.address.unwrap_or_else(|| external.name.clone());
        add(&external.name, NodeKind::External { address })?;
    }
    for queue in raw.queues {
        add(
            &queue.name,
            NodeKind::Queue {
                system: queue.system,
            },
        )?;
    }
    if !nodes
        .iter()
        .any(|n| matches!(n.kind, NodeKind::Service { .. }))
    {
        return Err("declares no [[services]]".into());
    }
    let index: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    let find = |name: &str, context: &str| -> Result<usize, String> {
        index.get(name).copied().ok_or_else(|| {
            let known: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "{context}: unknown service '{name}' (declared: {})",
                known.join(", ")
            )
        })
    };

    let mut entries = Vec::new();
    for (number, entry) in raw.entries.into_iter().enumerate() {
        let context = format!("entry {} ('{}')", number + 1, entry.service);
        let service = find(&entry.service, &context)?;
        if !matches!(nodes[service].kind, NodeKind::Service { .. }) {
            return Err(format!(
                "{context}: '{}' is a {}; traffic enters at a service",
                entry.service,
                nodes[service].kind.word()
            ));
        }
        let protocol = match entry.protocol.as_deref().unwrap_or("http") {
            "http" => EdgeKind::Http,
            "grpc" => EdgeKind::Grpc,
            other => {
                return Err(format!("{context}: protocol '{other}' is not http or grpc"));
            }
        };
        check_operation(protocol, &entry.operation).map_err(|e| format!("{context}: {e}"))?;
        let weight = entry.weight.unwrap_or(1.0);
        if !(weight.is_finite() && weight > 0.0) {
            return Err(format!("{context}: weight must be above 0"));
        }
        entries.push(Entry {
            service,
            operation: entry.operation,
            protocol,
            weight,
            latency: latency(
                &context,
                entry.latency.as_deref().unwrap_or(DEFAULT_LATENCY),
                entry.spread,
            )?,
        });
    }
    if entries.is_empty() {
        return Err(
            "declares no [[entries]]: name at least one service operation where traffic enters"
                .into(),
        );
    }

    let mut edges = Vec::new();
    for edge in raw.edges {
        edges.push(resolve_edge(edge, &nodes, &find)?);
    }

    let mut incidents = Vec::new();
    for (number, incident) in raw.incidents.into_iter().enumerate() {
        let label = normalize_label(&incident.edge);
        let context = format!("incident {} on '{label}'", number + 1);
        let matching: Vec<usize> = edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.label == label)
            .map(|(i, _)| i)
            .collect();
        if matching.is_empty() {
            return Err(format!("{context}: no such edge in [[edges]]"));
        }
        let every = duration(&context, "every", &incident.every)?;
        let length = duration(&context, "length", &incident.length)?;
        if every.is_zero() || length > every {
            return Err(format!(
                "{context}: every must be above 0 and length at most every"
            ));
        }
        let latency_factor = incident.latency.unwrap_or(1.0);
        let traffic_factor = incident.traffic.unwrap_or(1.0);
        let valid = latency_factor.is_finite()
            && latency_factor > 0.0
            && traffic_factor.is_finite()
            && traffic_factor >= 0.0;
        if !valid {
            return Err(format!(
                "{context}: latency must be above 0 and traffic at least 0 (both are multipliers)"
            ));
        }
        incidents.push(Incident {
            edges: matching,
            every_ns: nanos(every),
            length_ns: nanos(length),
            offset_ns: nanos(duration(
                &context,
                "offset",
                incident.offset.as_deref().unwrap_or("0s"),
            )?),
            latency_factor,
            error_rate: incident
                .errors
                .map(|rate| probability(&context, "errors", rate))
                .transpose()?,
            retries: incident.retries,
            traffic_factor,
        });
    }

    let traces_per_second = raw.traffic.rate.unwrap_or(10.0);
    if !(traces_per_second.is_finite() && traces_per_second > 0.0) {
        return Err("[traffic] rate must be above 0 root traces per second".into());
    }
    let mut leaving = vec![Vec::new(); nodes.len()];
    for (index, edge) in edges.iter().enumerate() {
        leaving[edge.from].push(index);
    }
    let topology = Topology {
        name: raw.name.unwrap_or_else(|| "topology".into()),
        traces_per_second,
        nodes,
        edges,
        entries,
        incidents,
        resource: raw.resource.into_iter().collect(),
        leaving,
    };
    check_operations(&topology)?;
    Ok(topology)
}

fn resolve_edge(
    raw: EdgeFormat,
    nodes: &[Node],
    find: &dyn Fn(&str, &str) -> Result<usize, String>,
) -> Result<Edge, String> {
    let label = normalize_label(&raw.edge);
    let context = format!("edge '{label}'");
    let Some((from_name, to_name)) = label.split_once(" -> ") else {
        return Err(format!(
            "{context}: write an edge as 'from -> to', e.g. 'orders -> inventory'"
        ));
    };
    let from = find(from_name, &context)?;
    let to = find(to_name, &context)?;
    let protocol = raw.protocol.as_deref();
    let kind = match (&nodes[from].kind, &nodes[to].kind, protocol) {
        (NodeKind::Service { .. }, NodeKind::Service { .. }, None | Some("http")) => EdgeKind::Http,
        (NodeKind::Service { .. }, NodeKind::Service { .. }, Some("grpc")) => EdgeKind::Grpc,
        (NodeKind::Service { .. }, NodeKind::Database { .. }, None) => EdgeKind::Database,
        (NodeKind::Service { .. }, NodeKind::External { .. }, None | Some("http")) => {
            EdgeKind::External
        }
        (NodeKind::Service { .. }, NodeKind::Queue { .. }, None) => EdgeKind::Publish,
        (NodeKind::Queue { .. }, NodeKind::Service { .. }, None) => EdgeKind::Consume,
        (_, _, Some(protocol))
            if matches!(
                (&nodes[from].kind, &nodes[to].kind),
                (NodeKind::Service { .. }, NodeKind::Service { .. })
            ) =>
        {
            return Err(format!(
                "{context}: protocol '{protocol}' is not http or grpc"
            ));
        }
        (_, _, Some(_))
            if matches!(
                (&nodes[from].kind, &nodes[to].kind),
                (NodeKind::Service { .. }, NodeKind::External { .. })
            ) =>
        {
            return Err(format!("{context}: an external API is called over http"));
        }
        (_, _, Some(_)) => {
            return Err(format!(
                "{context}: protocol applies only to calls between services"
            ));
        }
        (from_kind, to_kind, None) => {
            return Err(format!(
                "{context}: a {} cannot call a {}; edges go from a service to a service, \
                 database, external API or queue, or from a queue to a service",
                from_kind.word(),
                to_kind.word()
            ));
        }
    };
    if raw.when.is_some() && kind == EdgeKind::Consume {
        return Err(format!(
            "{context}: a queue delivers every message; `when` applies to edges from a service"
        ));
    }
    let operation = match (kind, raw.operation) {
        (EdgeKind::Publish, None) => format!("{to_name} publish"),
        (EdgeKind::Consume, None) => format!("{from_name} process"),
        (_, Some(operation)) => operation,
        (_, None) => {
            return Err(format!(
                "{context}: needs an operation, e.g. `operation = \"{}\"`",
                match kind {
                    EdgeKind::Grpc => "shop.Inventory/Reserve",
                    EdgeKind::Database => "SELECT orders",
                    _ => "POST /orders",
                }
            ));
        }
    };
    check_operation(kind, &operation).map_err(|e| format!("{context}: {e}"))?;
    let default_latency = match kind {
        EdgeKind::Publish => DEFAULT_PUBLISH_LATENCY,
        _ => DEFAULT_LATENCY,
    };
    let count = raw.count.unwrap_or(1);
    let batch = raw.batch.unwrap_or(1);
    if count == 0 || batch == 0 {
        return Err(format!("{context}: count and batch must be at least 1"));
    }
    if raw.batch.is_some() && kind != EdgeKind::Consume {
        return Err(format!(
            "{context}: batch applies only to edges from a queue"
        ));
    }
    if raw.delay.is_some() && kind != EdgeKind::Consume {
        return Err(format!(
            "{context}: delay applies only to edges from a queue"
        ));
    }
    Ok(Edge {
        from,
        to,
        kind,
        when: raw.when,
        operation,
        latency: latency(
            &context,
            raw.latency.as_deref().unwrap_or(default_latency),
            raw.spread,
        )?,
        error_rate: probability(&context, "errors", raw.errors.unwrap_or(0.0))?,
        count,
        chance: probability(&context, "chance", raw.chance.unwrap_or(1.0))?,
        retries: raw.retries.unwrap_or(0),
        delay: latency(
            &context,
            raw.delay.as_deref().unwrap_or(DEFAULT_DELAY),
            raw.spread,
        )?,
        batch,
        label,
    })
}

/// `a->b`, `a  ->  b` and `a -> b` are the same edge.
fn normalize_label(label: &str) -> String {
    match label.split_once("->") {
        Some((from, to)) => format!("{} -> {}", from.trim(), to.trim()),
        None => label.trim().to_string(),
    }
}

/// Checks that an operation name can be turned into the attributes its protocol needs.
fn check_operation(kind: EdgeKind, operation: &str) -> Result<(), String> {
    match kind {
        EdgeKind::Http | EdgeKind::External => match operation.split_once(' ') {
            Some((method, path)) if is_http_method(method) && path.starts_with('/') => Ok(()),
            _ => Err(format!(
                "an http operation is 'METHOD /path', e.g. 'POST /orders'; got '{operation}'"
            )),
        },
        EdgeKind::Grpc => match operation.split_once('/') {
            Some((service, method))
                if !service.is_empty()
                    && !method.is_empty()
                    && !operation.contains(char::is_whitespace)
                    && !method.contains('/') =>
            {
                Ok(())
            }
            _ => Err(format!(
                "a grpc operation is 'package.Service/Method', e.g. 'shop.Inventory/Reserve'; got '{operation}'"
            )),
        },
        _ if operation.trim().is_empty() => Err("the operation must not be empty".into()),
        _ => Ok(()),
    }
}

pub(crate) fn is_http_method(method: &str) -> bool {
    matches!(
        method,
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS"
    )
}

fn duration(context: &str, field: &str, text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|error| format!("{context}: {field}: {error}"))
}

fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

fn latency(context: &str, median: &str, spread: Option<f64>) -> Result<Latency, String> {
    let median = duration(context, "latency", median)?;
    let spread = spread.unwrap_or(DEFAULT_SPREAD);
    if !(spread.is_finite() && (0.0..=3.0).contains(&spread)) {
        return Err(format!("{context}: spread must be between 0 and 3"));
    }
    Ok(Latency {
        median_ns: median.as_nanos() as f64,
        spread,
    })
}

fn probability(context: &str, field: &str, value: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{context}: {field} is a probability between 0 and 1; got {value}"
        ))
    }
}

/// The edges that fire while `service` serves `operation`.
pub(crate) fn firing<'a>(
    topology: &'a Topology,
    service: usize,
    operation: &'a str,
) -> impl Iterator<Item = (usize, &'a Edge)> + 'a {
    topology
        .leaving
        .get(service)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(move |index| (*index, &topology.edges[*index]))
        .filter(move |(_, edge)| {
            edge.from == service && edge.when.as_deref().is_none_or(|when| when == operation)
        })
}

/// Every `when` names an operation its service serves, no chain of calls comes back to an
/// operation it started from (a trace would never end), and no root trace makes more than
/// [`MAX_SPANS_PER_TRACE`] spans.
fn check_operations(topology: &Topology) -> Result<(), String> {
    let mut served: Vec<Vec<&str>> = vec![Vec::new(); topology.nodes.len()];
    for entry in &topology.entries {
        served[entry.service].push(&entry.operation);
    }
    for edge in &topology.edges {
        if matches!(
            edge.kind,
            EdgeKind::Http | EdgeKind::Grpc | EdgeKind::Consume
        ) {
            served[edge.to].push(&edge.operation);
        }
    }
    for edge in &topology.edges {
        if let Some(when) = &edge.when
            && !served[edge.from].contains(&when.as_str())
        {
            return Err(format!(
                "edge '{}': '{}' never serves '{when}' (it serves: {})",
                edge.label,
                topology.nodes[edge.from].name,
                if served[edge.from].is_empty() {
                    "nothing".to_string()
                } else {
                    served[edge.from].join(", ")
                }
            ));
        }
    }
    let mut spans: HashMap<(usize, String), f64> = HashMap::new();
    for entry in &topology.entries {
        let mut path = Vec::new();
        let total = spans_of(
            topology,
            entry.service,
            &entry.operation,
            &mut path,
            &mut spans,
        )?;
        if 1.0 + total > MAX_SPANS_PER_TRACE {
            return Err(format!(
                "entry '{} {}' can make {:.0} spans per trace (at most {MAX_SPANS_PER_TRACE}); \
                 lower count, batch or retries",
                topology.nodes[entry.service].name,
                entry.operation,
                1.0 + total
            ));
        }
    }
    Ok(())
}

/// Spans below one serving of `operation` at most (every retry failing), and an error if the
/// calls lead back to an operation on `path`.
fn spans_of(
    topology: &Topology,
    service: usize,
    operation: &str,
    path: &mut Vec<(usize, String)>,
    memo: &mut HashMap<(usize, String), f64>,
) -> Result<f64, String> {
    let key = (service, operation.to_string());
    if let Some(known) = memo.get(&key) {
        return Ok(*known);
    }
    if let Some(start) = path.iter().position(|step| *step == key) {
        let mut cycle: Vec<String> = path[start..]
            .iter()
            .map(|(s, o)| format!("{} '{o}'", topology.nodes[*s].name))
            .collect();
        cycle.push(format!("{} '{operation}'", topology.nodes[service].name));
        return Err(format!(
            "calls never end: {} (give an edge of this cycle a `when` so the trace stops)",
            cycle.join(" -> ")
        ));
    }
    path.push(key.clone());
    let mut total = 0.0;
    for (index, edge) in firing(topology, service, operation) {
        let retries = topology
            .incidents
            .iter()
            .filter(|incident| incident.edges.contains(&index))
            .filter_map(|incident| incident.retries)
            .chain([edge.retries])
            .max()
            .unwrap_or(0);
        let calls = f64::from(edge.count) * f64::from(retries + 1);
        let below = match edge.kind {
            EdgeKind::Http | EdgeKind::Grpc => {
                2.0 + spans_of(topology, edge.to, &edge.operation, path, memo)?
            }
            EdgeKind::Database | EdgeKind::External => 1.0,
            EdgeKind::Publish => {
                let mut consumers = 0.0;
                for consume in topology
                    .edges
                    .iter()
                    .filter(|e| e.kind == EdgeKind::Consume && e.from == edge.to)
                {
                    consumers +=
                        1.0 + spans_of(topology, consume.to, &consume.operation, path, memo)?;
                }
                1.0 + consumers
            }
            EdgeKind::Consume => 0.0,
        };
        total += calls * below;
    }
    path.pop();
    memo.insert(key, total);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[entries]]
service = "gateway"
operation = "GET /checkout"

[[services]]
name = "gateway"

[[services]]
name = "orders"

[[queues]]
name = "events"
system = "kafka"
"#;

    /// The error `MINIMAL` plus `extra` gives, as the user sees it.
    fn error(extra: &str) -> String {
        match Topology::parse(&format!("{MINIMAL}{extra}"), "topology.toml") {
            Ok(_) => panic!("accepted:\n{extra}"),
            Err(error) => error.to_string(),
        }
    }

    fn check(extra: &str, expected: &str) {
        let error = error(extra);
        assert!(
            error.starts_with("topology.toml: ") && error.contains(expected),
            "expected `{expected}` in `{error}`"
        );
    }

    /// `generated:N`: N services in namespaces, a database per namespace, loops through
    /// queues, the same system for the same N, and sizes outside the range refused.
    #[test]
    fn a_generated_system_has_its_size_namespaces_and_loops() {
        let started = std::time::Instant::now();
        let big = Topology::load("generated:10000").unwrap_or_else(|error| panic!("{error}"));
        let took = started.elapsed();
        let services = big
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Service { .. }))
            .count();
        assert_eq!(services, 10_000);
        let edges = big.graph_edges();
        assert!(edges.len() > 40_000, "{} edges", edges.len());
        let namespaces: std::collections::BTreeSet<&str> = big
            .nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::Service { resource, .. } => resource
                    .iter()
                    .find(|(k, _)| k == "k8s.namespace.name")
                    .map(|(_, v)| v.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(namespaces.len(), 200);
        // Each loop's queue is consumed by a service that reaches its publisher.
        let queues: Vec<&(String, String, &str)> = edges
            .iter()
            .filter(|(from, _, _)| from.starts_with("loop-"))
            .collect();
        assert_eq!(queues.len(), 5, "{queues:?}");
        let again = Topology::load("generated:10000").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            again.graph_edges(),
            edges,
            "the same N gives the same system"
        );
        assert!(took < std::time::Duration::from_secs(20), "{took:?}");
        for bad in ["generated:5", "generated:many", "generated:1000000"] {
            let error = Topology::load(bad).unwrap_err().to_string();
            assert!(error.contains("generated"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_presets_parse() {
        for name in Topology::preset_names() {
            let topology = Topology::preset(name).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(topology.name, name);
        }
        let city = Topology::preset("city").unwrap_or_else(|error| panic!("{error}"));
        let services = city
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Service { .. }))
            .count();
        assert!((30..=50).contains(&services), "{services} services");
    }

    #[test]
    fn incidents_can_be_started_now() {
        let mut shop = Topology::preset("shop").unwrap_or_else(|error| panic!("{error}"));
        // Three minutes past a ten-minute mark: the shop's incident is off.
        let now = 1_764_396_000_000_000_000 + 180_000_000_000;
        assert!(!shop.incident_at(now));
        shop.start_incidents_at(now);
        assert!(shop.incident_at(now));
        assert!(shop.incident_at(now + 59_000_000_000));
        assert!(!shop.incident_at(now + 61_000_000_000));
        // ...and it recurs on its period from there.
        assert!(shop.incident_at(now + 600_000_000_000));
    }

    #[test]
    fn the_example_in_the_format_documentation_parses() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let length = readme[start..].find("```").expect("its end");
        let example = Topology::parse(&readme[start..start + length], "demo/README.md")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(example.edges.len(), 3);
        assert_eq!(example.incidents.len(), 1);
    }

    #[test]
    fn a_minimal_topology_parses_with_defaults() {
        let topology = Topology::parse(MINIMAL, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(topology.name, "topology");
        assert_eq!(topology.traces_per_second, 10.0);
        assert!(topology.edges.is_empty());
    }

    #[test]
    fn edges_and_names_are_checked_with_the_edge_named() {
        check(
            "[[edges]]\nedge = \"gateway -> invntory\"\noperation = \"GET /x\"\n",
            "edge 'gateway -> invntory': unknown service 'invntory'",
        );
        check(
            "[[edges]]\nedge = \"gateway => orders\"\n",
            "edge 'gateway => orders': write an edge as 'from -> to'",
        );
        check(
            "[[edges]]\nedge = \"gateway -> orders\"\n",
            "edge 'gateway -> orders': needs an operation",
        );
        check(
            "[[edges]]\nedge = \"gateway -> orders\"\noperation = \"orders\"\n",
            "an http operation is 'METHOD /path'",
        );
        check(
            "[[edges]]\nedge = \"gateway -> orders\"\nprotocol = \"grpc\"\noperation = \"GET /x\"\n",
            "a grpc operation is 'package.Service/Method'",
        );
        check(
            "[[edges]]\nedge = \"gateway -> orders\"\nprotocol = \"soap\"\noperation = \"GET /x\"\n",
            "protocol 'soap' is not http or grpc",
        );
        check(
            "[[edges]]\nedge = \"events -> events\"\n",
            "a queue cannot call a queue",
        );
        check(
            "[[edges]]\nedge = \"gateway -> orders\"\noperation = \"GET /x\"\nerrors = 1.5\n",
            "errors is a probability between 0 and 1",
        );
        check(
            "[[edges]]\nedge = \"gateway -> orders\"\noperation = \"GET /x\"\nlatency = \"5 parsecs\"\n",
            "edge 'gateway -> orders': latency: duration",
        );
        check(
            "[[edges]]\nedge = \"gateway -> orders\"\noperation = \"GET /x\"\nwhen = \"GET /chekout\"\n",
            "'gateway' never serves 'GET /chekout' (it serves: GET /checkout)",
        );
        check(
            "[[edges]]\nedge = \"gateway -> events\"\nbatch = 5\n",
            "batch applies only to edges from a queue",
        );
    }

    #[test]
    fn file_level_mistakes_are_named() {
        check(
            "[[services]]\nname = \"gateway\"\n",
            "'gateway' is declared twice",
        );
        check("[[edgez]]\nedge = \"a -> b\"\n", "unknown field `edgez`");
        check(
            "[[incidents]]\nedge = \"gateway -> nowhere\"\nevery = \"10m\"\nlength = \"1m\"\n",
            "incident 1 on 'gateway -> nowhere': no such edge",
        );
        let no_entries = Topology::parse("[[services]]\nname = \"a\"\n", "t.toml")
            .err()
            .map(|e| e.to_string());
        assert!(
            no_entries
                .as_deref()
                .is_some_and(|e| e.contains("declares no [[entries]]")),
            "{no_entries:?}"
        );
        let syntax = Topology::parse("name = \n", "broken.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            syntax.starts_with("broken.toml: ") && syntax.contains("line 1"),
            "{syntax}"
        );
    }

    #[test]
    fn a_chain_of_calls_that_never_ends_is_refused_with_the_cycle() {
        check(
            "[[edges]]\nedge = \"gateway -> orders\"\noperation = \"GET /x\"\n\
             [[edges]]\nedge = \"orders -> gateway\"\noperation = \"GET /checkout\"\n",
            "calls never end: gateway 'GET /checkout' -> orders 'GET /x' -> gateway 'GET /checkout'",
        );
        check(
            "[[edges]]\nedge = \"gateway -> events\"\n\
             [[edges]]\nedge = \"events -> orders\"\n\
             [[edges]]\nedge = \"orders -> events\"\n",
            "calls never end",
        );
        // The same loop stops when `when` ends it.
        let stopped = "[[edges]]\nedge = \"gateway -> events\"\nwhen = \"GET /checkout\"\n\
             [[edges]]\nedge = \"events -> orders\"\n\
             [[edges]]\nedge = \"orders -> gateway\"\noperation = \"POST /done\"\n";
        Topology::parse(&format!("{MINIMAL}{stopped}"), "t.toml").unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn fan_out_that_explodes_is_refused() {
        check(
            "[[services]]\nname = \"a\"\n[[services]]\nname = \"b\"\n\
             [[edges]]\nedge = \"gateway -> orders\"\noperation = \"GET /x\"\ncount = 100\n\
             [[edges]]\nedge = \"orders -> a\"\noperation = \"GET /y\"\ncount = 100\n",
            "spans per trace (at most 10000)",
        );
    }

    #[test]
    fn load_names_presets_or_files_and_says_which_exist() {
        let error = Topology::load("no-such-thing").err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("not a preset (shop, city, generated:N)")),
            "{error:?}"
        );
        assert!(Topology::load("shop").is_ok());
    }
}

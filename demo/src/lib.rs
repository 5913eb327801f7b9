//! Simulated event-driven systems, and the OTLP client that sends their traces: what
//! `flowscope serve --demo` runs so that a newcomer sees a living graph within seconds, and
//! what `flowscope loadgen` and `flowscope-bench` send.
//!
//! ```text
//!  topology.toml / preset ──> topology: parse + check ──> simulate: Simulator::request(now, traces)
//!                                                                  │ ExportTraceServiceRequest
//!       run (serve --demo): twice a second over OTLP/gRPC <────────┤
//!       send (loadgen, bench): N connections, gRPC or HTTP, ───────┘
//!             protobuf or JSON, gzip, paced or flat out            cpu: /proc CPU-seconds
//! ```
//!
//! The shop preset (`presets/shop.toml`), behind `serve --demo`:
//!
//! ```text
//!  gateway ──> orders ──> inventory            (latency shift + error burst + retry storm
//!                │ ├──> orders-db (postgresql)   during the scheduled incident)
//!                │ └──> api.payments.example (no spans: an external peer)
//!                └──> order-events (kafka) ──> billing ──> orders   (a loop through a queue;
//!                                                                    the consumer LINKS to the producer)
//! ```
//!
//! Generation is a plain function of a seed and the time it is given; only [`run`] and
//! [`send`] talk to the network.

pub mod cpu;
pub mod send;
pub mod simulate;
pub mod topology;

use std::future::Future;
use std::time::Duration;

use flowscope_base::clock::now_ns;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

pub use simulate::Simulator;
pub use topology::Topology;

/// Everything that can go wrong here, by whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topology file or preset name is wrong: the user's to fix.
    #[error("{file}: {message}")]
    Topology { file: String, message: String },
    /// The endpoint, protocol and encoding do not go together, or the endpoint is no URL.
    #[error("{0}")]
    BadTarget(String),
    /// Nothing answers at the endpoint.
    #[error("cannot reach {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// The machine does not give what we read (/proc).
    #[error("{0}")]
    System(String),
    /// A bug: a task panicked, an encoder failed.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What `serve --demo` simulates.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub topology: Topology,
    pub seed: u64,
    /// Sent as `authorization: Bearer <token>` when the server checks tokens.
    pub token: Option<String>,
}

impl DemoConfig {
    pub const DEFAULT_SEED: u64 = 0x5EED_F10E;

    pub fn new(topology: Topology) -> Self {
        Self {
            topology,
            seed: Self::DEFAULT_SEED,
            token: None,
        }
    }
}

/// How often [`run`] sends.
const TICK: Duration = Duration::from_millis(500);

/// Sends the topology's traces to an OTLP/gRPC `endpoint` (e.g. `http://127.0.0.1:4317`)
/// twice a second, at the topology's traffic rate, until `shutdown` resolves. Export errors
/// are logged and the demo goes on.
pub async fn run(endpoint: String, config: DemoConfig, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let name = config.topology.name.clone();
    let rate = config.topology.traces_per_second;
    let authorization = config.token.as_ref().and_then(|token| {
        format!("Bearer {token}")
            .parse::<tonic::metadata::MetadataValue<_>>()
            .ok()
    });
    let mut simulator = Simulator::new(config.topology, config.seed);
    let mut ticker = tokio::time::interval(TICK);
    let mut client = None;
    // Fractions of a trace carried to the next tick, so that low rates still send.
    let mut owed = 0.0;
    tracing::info!(%endpoint, topology = %name, traces_per_second = rate, "demo: sending a simulated system's traces");
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
        owed += simulator.topology().traces_per_second_at(now) * TICK.as_secs_f64();
        let traces = owed.floor();
        owed -= traces;
        if traces < 1.0 {
            continue;
        }
        let mut request = tonic::Request::new(simulator.request(now, traces as u32));
        if let Some(value) = &authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        if let Some(connected) = client.as_mut()
            && let Err(status) = connected.export(request).await
        {
            tracing::warn!(code = ?status.code(), message = status.message(), "demo: export failed");
        }
    }
}

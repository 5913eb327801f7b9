//! Counters of the three listeners' connections (OTLP/gRPC, OTLP/HTTP, the API), kept by the
//! binary's accept layer and shown in the `process` section of `/api/status` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// One listener's connections: how many are open, its cap, and why others were closed.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    /// Connections open now.
    pub open: AtomicU64,
    /// The most connections this listener holds at once.
    pub limit: AtomicU64,
    /// Connections accepted and closed at once because the listener was at its cap.
    pub refused: AtomicU64,
    /// Accepts that failed for lack of descriptors or memory (the listener backs off).
    pub accept_errors: AtomicU64,
    /// Connections closed because no complete request head arrived in time.
    pub header_read_timeouts: AtomicU64,
    /// Connections closed because no byte moved either way for the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Requests answered 408 because their body did not arrive in time.
    pub request_body_timeouts: AtomicU64,
}

/// The counters of every listener the process serves.
#[derive(Debug, Default, Clone)]
pub struct Connections {
    pub otlp_grpc: Arc<ConnectionCounters>,
    pub otlp_http: Arc<ConnectionCounters>,
    pub api: Arc<ConnectionCounters>,
}

//! OTLP trace receivers (gRPC and HTTP) that decode spans into Arrow batches and hand them
//! to a [`SpanSink`], acknowledging the client only once the sink says the batch is durable.
//!
//! ```text
//!  OTLP/gRPC :4317 ──> grpc.rs ─┐  framing, gzip by tonic, status codes
//!  OTLP/HTTP :4318 ──> http.rs ─┤  content types, gzip, status codes
//!                               └─> accept.rs: authorize ─ memory ─ decode ─ retention ─ rate
//!                                        │                                   └─> SpanSink::write
//!                                        │                              ──Ok──> 200 / OK to the client
//!                                   decode.rs ─ protobuf ──> wire.rs ─────────────────────┐
//!                                        │        (unusual encodings: prost ──convert)────┤
//!                                        └─ JSON ──> ExportTraceServiceRequest ──convert──┤
//!                                 spans.rs: checks, rejections     RecordBatch in storage_schema()
//! ```
//!
//! Calls go one way, down this list: `grpc`/`http` → `accept` → `decode` → `wire` → `spans`.
//!
//! **Invariant:** OTLP types and wire formats never leave this crate; what goes out is an Arrow
//! `RecordBatch` in `flowscope_model::storage_schema()`.
//!
//! **Invariant:** each protocol maps [`CollectorError`] to its status codes in exactly one
//! function: `grpc::grpc_status` and `http::error_response`.

mod accept;
pub mod decode;
pub mod dedup;
/// The fuzz targets' checks (`fuzz/`), shared with `tests/fuzz_corpus.rs`.
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod http;
pub mod route;
pub mod sink;
mod spans;
mod wire;

#[cfg(test)]
mod test_support;

pub use decode::{
    DecodedTraces, convert, decode_json, decode_protobuf, decode_protobuf_with_prost,
};
pub use grpc::serve_grpc;
pub use http::{TRACES_PATH, http_router};
pub use route::{Cluster, ROUTE_HEADER, TakePart};
pub use sink::{SinkError, SpanSink, decode_logged_request};

use std::sync::Arc;
use std::time::Duration;

use flowscope_auth::{Access, AuthError, Limits, RateLimiter};
use flowscope_base::memory::{MemoryBudget, Refusal};
use flowscope_base::telemetry::Telemetry;

/// Bytes reserved for decoding, per byte of (inflated) request: the Arrow batch is about
/// 1.7 times the protobuf, and its builders grow by doubling when the last batch's sizes
/// (`SpanBatchBuilder::sized_for`) are no guide.
pub const DECODE_FACTOR: usize = 2;

/// A request holds at most this many times its (inflated) size while it is read and
/// decoded: its bytes plus [`DECODE_FACTOR`], and a gzipped body's compressed bytes.
pub const REQUEST_MEMORY_FACTOR: usize = 1 + DECODE_FACTOR + 1;

/// The receivers' settings, shared by gRPC and HTTP.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Largest request accepted, in bytes, measured after decompression (gRPC: the decoded
    /// message; HTTP: the body). The OTLP specification recommends 64 MiB.
    pub max_request_bytes: usize,
    /// Who may send spans, for which tenant, and how fast.
    pub access: Arc<Access>,
    /// The per-tenant token buckets behind `access`'s limits.
    pub limiter: Arc<RateLimiter>,
    /// The in-flight request budget both receivers reserve from before reading and decoding,
    /// and the RSS safety net (`--memory-limit`).
    pub memory: Arc<MemoryBudget>,
    /// The store's retention (`--retention`): spans that started longer ago are refused in
    /// the partial success, since retention would delete them right after acknowledging
    /// them. `None` refuses no span for its age.
    pub retention: Option<Duration>,
    /// HTTP/2 keepalive pings on gRPC connections; `None` sends none.
    pub http2_keepalive: Option<Http2Keepalive>,
    /// Where requests and spans are counted by tenant, protocol and outcome (`/metrics`).
    pub telemetry: Arc<Telemetry>,
    /// This node's part in a cluster (routing requests, or taking forwarded parts); `None`
    /// for a standalone node, which takes every request itself.
    pub cluster: Option<Arc<dyn Cluster>>,
}

/// HTTP/2 PING frames on an otherwise quiet gRPC connection: one after `interval` without a
/// byte from the client, and the connection is closed if it is not answered within `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Http2Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 64 * 1024 * 1024,
            access: Arc::new(Access::open(Limits::default())),
            limiter: Arc::new(RateLimiter::new()),
            memory: Arc::new(MemoryBudget::unlimited()),
            http2_keepalive: None,
            retention: None,
            telemetry: Arc::default(),
            cluster: None,
        }
    }
}

/// Everything that can go wrong while receiving spans; each variant says whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The client sent bytes that are not a valid OTLP request; retrying will not help.
    #[error("{0}")]
    InvalidRequest(String),
    /// The client sent a request over `max_request_bytes` (after decompression).
    #[error(
        "request is larger than the {limit}-byte limit after decompression: send smaller batches"
    )]
    TooLarge { limit: usize },
    /// The client used a Content-Type or Content-Encoding this receiver does not speak.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The client used an HTTP method other than POST.
    #[error("method {0} is not allowed on this path: send OTLP exports with POST")]
    MethodNotAllowed(String),
    /// No valid token, or a token that may not send spans for this tenant: not retryable.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The tenant sends faster than its limit: retryable after `retry_after` (HTTP 429,
    /// gRPC RESOURCE_EXHAUSTED with RetryInfo).
    #[error("this tenant's ingest rate limit is exceeded: retry in {} ms", retry_after.as_millis())]
    RateLimited { retry_after: Duration },
    /// The request did not fit in the memory budget; it was refused before it was read or
    /// decoded, and the client should retry.
    #[error("the receiver is at its memory limit ({0}): retry in {ms} ms", ms = .0.retry_after().as_millis())]
    Overloaded(Refusal),
    /// A call that carries the parts of several client requests (a receiver's batch) would
    /// refuse some of their spans: nothing was stored, and the receiver sends the parts one
    /// by one so that each request learns its own partial success.
    #[error("{0}")]
    OneByOne(String),
    /// The sink did not take the batch; [`SinkError`] says whether retrying can help.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The gRPC server itself failed (for example the listener broke): the operator's problem.
    #[error("grpc server failed: {0}")]
    Server(#[from] tonic::transport::Error),
    /// A bug in this crate.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CollectorError {
    /// How long the client should wait before retrying, or `None` when retrying cannot help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CollectorError::Overloaded(refusal) => Some(refusal.retry_after()),
            CollectorError::RateLimited { retry_after } => Some(*retry_after),
            CollectorError::Sink(sink_error) => sink_error.retry_after(),
            _ => None,
        }
    }
}

impl From<Refusal> for CollectorError {
    fn from(refusal: Refusal) -> Self {
        CollectorError::Overloaded(refusal)
    }
}

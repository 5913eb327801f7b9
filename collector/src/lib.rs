//! OTLP trace receivers (gRPC and HTTP) that decode spans into Arrow batches and hand them
//! to a [`SpanSink`], acknowledging the client only once the sink says the batch is durable.
//!
//! ```text
//!  OTLP/gRPC :4317 ──> grpc.rs ─┐   (the request's bytes)
//!                               ├─> decode.rs ─ protobuf ──> wire.rs ──────────────────┐
//!  OTLP/HTTP :4318 ──> http.rs ─┘        │        (unusual encodings: prost ──convert)─┤
//!                                        └─ JSON ──> ExportTraceServiceRequest ──convert─┤
//!                                                             RecordBatch in storage_schema()
//!                                        │
//!                                        └──> SpanSink::write(batch) ──Ok──> 200 / OK to the client
//! ```
//!
//! **Invariant:** OTLP types and wire formats never leave this crate; what goes out is an Arrow
//! `RecordBatch` in `flowscope_model::storage_schema()`.
//!
//! **Invariant:** each protocol maps [`CollectorError`] to its status codes in exactly one
//! function: `grpc::grpc_status` and `http::error_response`.

pub mod decode;
/// The fuzz targets' checks (`fuzz/`), shared with `tests/fuzz_corpus.rs`.
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod http;
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
pub use sink::{SinkError, SpanSink};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use flowscope_auth::{Access, AuthError, Limits, Permission, Principal, RateLimiter, TenantId};
use flowscope_base::memory::{MemoryBudget, Refusal};
use flowscope_base::telemetry::Telemetry;
use flowscope_model::retention::retention_cutoff_ns;

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
        }
    }
}

impl CollectorConfig {
    /// The principal a request sends spans as, from its `authorization` header and every
    /// value of its tenant header, checked before any of its body is read.
    pub(crate) fn authorize<'h>(
        &self,
        authorization: Option<&[u8]>,
        tenant_header: impl IntoIterator<Item = &'h [u8]>,
    ) -> Result<Principal, CollectorError> {
        let principal = self.access.authenticate(authorization, tenant_header)?;
        if !principal.may(Permission::Ingest) {
            return Err(AuthError::Forbidden("this token may not send spans").into());
        }
        Ok(principal)
    }

    /// Counts one answered export request of `tenant` (`None`: refused before its tenant
    /// was known) under its outcome.
    pub(crate) fn count_request(
        &self,
        protocol: &'static str,
        tenant: Option<&TenantId>,
        outcome: &'static str,
    ) {
        match tenant {
            Some(tenant) => self
                .telemetry
                .ingest_requests
                .add((tenant.as_str().to_string(), protocol, outcome), 1),
            None => self
                .telemetry
                .ingest_unattributed
                .add((protocol, outcome), 1),
        }
    }

    /// Counts a decoded request's spans: `spans` stored (or, if `written` is false, all
    /// refused with the request) and `rejected` refused in the partial success.
    pub(crate) fn count_spans(
        &self,
        protocol: &'static str,
        tenant: &TenantId,
        spans: u64,
        rejected: u64,
        written: bool,
    ) {
        let counters = &self.telemetry.ingest_spans;
        let tenant = tenant.as_str();
        if spans > 0 {
            let outcome = if written { "accepted" } else { "refused" };
            counters.add((tenant.to_string(), protocol, outcome), spans);
        }
        if rejected > 0 {
            counters.add((tenant.to_string(), protocol, "rejected"), rejected);
        }
    }

    /// Takes a decoded request's spans and bytes from its tenant's rate limits.
    pub(crate) fn admit(
        &self,
        principal: &Principal,
        spans: usize,
        bytes: usize,
    ) -> Result<(), CollectorError> {
        let limits = self.access.limits(&principal.tenant);
        self.limiter
            .admit(
                &principal.tenant,
                limits,
                spans as u64,
                bytes as u64,
                Instant::now(),
            )
            .map_err(|retry_after| CollectorError::RateLimited { retry_after })
    }
}

/// Refuses the spans of a decoded request that started before the retention horizon, by the
/// clock now: the one place both receivers apply `CollectorConfig::retention`. WAL replay
/// drops the same spans from the logged request (`flowscope_query::StoreConfig::retention`),
/// so the decoder itself stays free of clocks and settings.
pub(crate) fn refuse_expired(
    decoded: &mut DecodedTraces,
    retention: Option<Duration>,
) -> Result<(), CollectorError> {
    let Some(retention) = retention else {
        return Ok(());
    };
    let cutoff_ns = retention_cutoff_ns(SystemTime::now(), retention);
    decoded.refuse_started_before(cutoff_ns, retention)
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

/// The request outcome of an answered export (`/metrics`' `outcome` label): `accepted`
/// whole, `partial` (some spans refused in the partial success), or its error's.
pub(crate) fn outcome(result: Result<i64, &CollectorError>) -> &'static str {
    let error = match result {
        Ok(0) => return "accepted",
        Ok(_) => return "partial",
        Err(error) => error,
    };
    match error {
        CollectorError::InvalidRequest(_)
        | CollectorError::UnsupportedMediaType(_)
        | CollectorError::MethodNotAllowed(_) => "invalid",
        CollectorError::TooLarge { .. } => "too_large",
        CollectorError::Auth(AuthError::Unauthenticated) => "unauthenticated",
        CollectorError::Auth(AuthError::Forbidden(_)) => "forbidden",
        CollectorError::RateLimited { .. } => "rate_limited",
        CollectorError::Overloaded(_) => "refused",
        CollectorError::Sink(sink) if sink.retry_after().is_some() => "refused",
        CollectorError::Sink(_) | CollectorError::Server(_) | CollectorError::Internal(_) => {
            "failed"
        }
    }
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

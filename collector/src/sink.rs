//! The extension point where decoded spans leave the collector: a [`SpanSink`] makes batches durable.

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use flowscope_auth::TenantId;
use futures::future::BoxFuture;

/// Where decoded spans go. The receiver acknowledges the client only after `write` resolves Ok:
/// Ok means the batch is durable. `tenant` is the one the request's token belongs to.
pub trait SpanSink: Send + Sync + 'static {
    fn write(
        &self,
        tenant: &TenantId,
        batch: RecordBatch,
    ) -> BoxFuture<'static, Result<(), SinkError>>;

    /// Like `write`, for a batch decoded from the OTLP protobuf `request` (after any gzip was
    /// inflated): a sink may make the request's own bytes durable instead of encoding the
    /// batch, and decode them again on recovery with [`decode_logged_request`].
    fn write_request(
        &self,
        tenant: &TenantId,
        batch: RecordBatch,
        request: Bytes,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        let _ = request;
        self.write(tenant, batch)
    }
}

/// Why a sink did not take a batch. The variant decides whether the client should retry.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Pipeline full: retryable; gRPC UNAVAILABLE with google.rpc.RetryInfo, HTTP 503 + Retry-After.
    #[error("span pipeline is full: retry in {} ms", retry_after.as_millis())]
    Overloaded { retry_after: Duration },
    /// Store cannot write now (disk full, shutting down): retryable, same mapping as Overloaded
    /// with retry_after 5s.
    #[error("span store cannot write now ({0}): retry later")]
    Unavailable(String),
    /// Bug or unexpected I/O failure: gRPC INTERNAL / HTTP 500.
    #[error("span store failed: {0}")]
    Internal(String),
}

impl SinkError {
    /// How long a client should wait before retrying, or `None` when retrying cannot help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::Overloaded { retry_after } => Some(*retry_after),
            SinkError::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER),
            SinkError::Internal(_) => None,
        }
    }
}

/// The retry delay we advertise when the store is unavailable and cannot say for how long.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Decodes the OTLP protobuf request a sink logged through [`SpanSink::write_request`] back
/// into the batch it was acknowledged with (`Ok(None)`: none of its spans were accepted):
/// the decoder WAL replay must use, since it is the one the receivers used.
pub fn decode_logged_request(request: &[u8]) -> Result<Option<RecordBatch>, String> {
    crate::decode::decode_protobuf(request)
        .map(|decoded| decoded.batch)
        .map_err(|error| error.to_string())
}

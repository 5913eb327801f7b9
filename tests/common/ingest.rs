//! A client that keeps count: each export's outcome as the OTLP retry rules see it, so
//! tests can check that a server under stress only ever refuses in a retryable way, and
//! which spans it acknowledged.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use tonic::transport::Channel;

/// What one export got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 / OK without partial success: the spans are durable.
    Acked,
    /// A refusal the OTLP spec lets a client retry (HTTP 429/503 with Retry-After, gRPC
    /// UNAVAILABLE, or RESOURCE_EXHAUSTED with RetryInfo); `what` names it for counting.
    Retryable { what: String, retry_after: Duration },
    /// The connection broke before an answer: the spec says retry, the spans may or may
    /// not be stored.
    Disconnected(String),
    /// Anything else (500, INTERNAL, a non-retryable code): never acceptable in these tests.
    Wrong(String),
}

/// The span ids (hex) of a request, as `/api/sql` shows them.
pub fn span_ids(request: &ExportTraceServiceRequest) -> Vec<String> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.span_id.iter().map(|b| format!("{b:02x}")).collect())
        .collect()
}

fn retry_info_delay(details: &[u8]) -> Option<Duration> {
    // google.rpc.Status { details: [Any { type_url, value: RetryInfo { retry_delay } }] };
    // the delay itself does not matter here, only that the server sent RetryInfo.
    let marker = b"google.rpc.RetryInfo";
    details
        .windows(marker.len())
        .any(|w| w == marker)
        .then_some(Duration::from_secs(1))
}

/// One OTLP/gRPC export.
pub async fn grpc_export(
    client: &mut TraceServiceClient<Channel>,
    request: ExportTraceServiceRequest,
) -> Outcome {
    match client.export(request).await {
        Ok(response) => match response.into_inner().partial_success {
            None => Outcome::Acked,
            Some(partial) => Outcome::Wrong(format!("partial success: {partial:?}")),
        },
        Err(status) => {
            let retry_info = retry_info_delay(status.details());
            match (status.code(), retry_info) {
                (tonic::Code::Unavailable, _) => Outcome::Retryable {
                    what: if status.message().is_empty() {
                        "UNAVAILABLE".into()
                    } else {
                        format!("UNAVAILABLE ({})", status.message())
                    },
                    retry_after: retry_info.unwrap_or(Duration::from_secs(1)),
                },
                (tonic::Code::ResourceExhausted, Some(delay)) => Outcome::Retryable {
                    what: "RESOURCE_EXHAUSTED+RetryInfo".into(),
                    retry_after: delay,
                },
                // tonic reports a broken connection as UNKNOWN or CANCELLED with a
                // transport error as its source.
                (tonic::Code::Unknown | tonic::Code::Cancelled, _)
                    if std::error::Error::source(&status).is_some() =>
                {
                    Outcome::Disconnected(format!("{status}"))
                }
                (code, _) => Outcome::Wrong(format!("{code:?}: {}", status.message())),
            }
        }
    }
}

/// One OTLP/HTTP protobuf export.
pub async fn http_export(
    client: &reqwest::Client,
    url: &str,
    request: &ExportTraceServiceRequest,
) -> Outcome {
    let sent = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => return Outcome::Disconnected(format!("{error:?}")),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    match (status, retry_after) {
        (200, _) => Outcome::Acked,
        (429 | 503, Some(retry_after)) => Outcome::Retryable {
            what: format!("HTTP {status}"),
            retry_after,
        },
        (status, _) => {
            let body = response.bytes().await.unwrap_or_default();
            Outcome::Wrong(format!(
                "HTTP {status} retry-after={retry_after:?}: {}",
                String::from_utf8_lossy(&body)
            ))
        }
    }
}

/// `id` as 16 hex digits: the span ids `otlp::span(n, _)` gives are `n + 1`, big-endian.
pub fn span_id_hex(n: u64) -> String {
    format!("{:016x}", n + 1)
}

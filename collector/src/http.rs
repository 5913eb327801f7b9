//! The OTLP/HTTP receiver: `POST /v1/traces` with a protobuf or JSON body, optionally gzipped.
//!
//! The size limit applies to the body after decompression, and gzip is inflated through a
//! buffer that never grows past `max_request_bytes + 1`, so a gzip bomb costs at most the limit.

use std::io::Read as _;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::BytesMut;
use flate2::read::MultiGzDecoder;
use flowscope_auth::{AuthError, Principal};
use flowscope_base::memory::Reservation;
use http::header::{
    ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;

use crate::accept::{Encoding as PayloadEncoding, Receiver, Routing};
use crate::sink::SpanSink;
use crate::{CollectorConfig, CollectorError};

/// The OTLP/HTTP path for traces.
pub const TRACES_PATH: &str = "/v1/traces";

const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";
const JSON_CONTENT_TYPE: &str = "application/json";

/// The OTLP/HTTP router: POST /v1/traces. The binary serves it with axum::serve on its own listener.
pub fn http_router(sink: Arc<dyn SpanSink>, config: CollectorConfig) -> Router {
    let state = Receiver {
        sink,
        config,
        protocol: HTTP,
    };
    Router::new()
        .route(
            TRACES_PATH,
            post(export_traces).fallback(method_not_allowed),
        )
        // The limit is enforced by `read_body` and `gunzip`, after decompression.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The media type of an OTLP/HTTP payload encoding; responses, errors included, use the
/// request's.
fn content_type(encoding: PayloadEncoding) -> &'static str {
    match encoding {
        PayloadEncoding::Protobuf => PROTOBUF_CONTENT_TYPE,
        PayloadEncoding::Json => JSON_CONTENT_TYPE,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Identity,
    Gzip,
}

async fn export_traces(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let encoding = match payload_encoding(&headers) {
        Ok(encoding) => encoding,
        Err(error) => {
            receiver.count_refusal(None, &error);
            return error_response(&error, None);
        }
    };
    let principal = match receiver.authorize(&headers) {
        Ok(principal) => principal,
        Err(error) => {
            receiver.count_refusal(None, &error);
            return error_response(&error, Some(encoding));
        }
    };
    let result = receive(&receiver, &principal, &headers, body, encoding).await;
    receiver.count_answer(&principal.tenant, &result);
    match result {
        Ok(response) => success_response(&response, encoding),
        Err(error) => error_response(&error, Some(encoding)),
    }
}

/// The `protocol` label of this receiver's figures.
const HTTP: &str = "http";

async fn method_not_allowed(method: Method, headers: HeaderMap) -> Response {
    let error = CollectorError::MethodNotAllowed(method.to_string());
    error_response(&error, payload_encoding(&headers).ok())
}

/// Reads the body within the limit and the memory budget, then hands it to the accept
/// step, which inflates gzip on the blocking pool along with decoding it.
async fn receive(
    receiver: &Receiver,
    principal: &Principal,
    headers: &HeaderMap,
    body: Body,
    encoding: PayloadEncoding,
) -> Result<ExportTraceServiceResponse, CollectorError> {
    let compression = compression(headers)?;
    let limit = receiver.config.max_request_bytes;
    // Refused before a byte is read when memory is short; every buffer below is reserved
    // before it is allocated and given back when the request is answered.
    let mut reservation = receiver.config.memory.admit()?;
    let raw = read_body(body, headers, limit, &mut reservation).await?;
    let inline = compression == Compression::Identity && encoding.decodes_inline(raw.len());
    let routing = if receiver.config.cluster.is_some() {
        Routing::of(headers)
    } else {
        Routing::default()
    };
    receiver
        .accept(
            routing,
            principal,
            reservation,
            encoding,
            inline,
            move |reservation| inflate(raw, compression, limit, reservation),
        )
        .await
}

/// The payload encoding from Content-Type, ignoring parameters such as `charset`.
fn payload_encoding(headers: &HeaderMap) -> Result<PayloadEncoding, CollectorError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case(PROTOBUF_CONTENT_TYPE) {
        Ok(PayloadEncoding::Protobuf)
    } else if media_type.eq_ignore_ascii_case(JSON_CONTENT_TYPE) {
        Ok(PayloadEncoding::Json)
    } else {
        Err(CollectorError::UnsupportedMediaType(format!(
            "unsupported content type {content_type:?}: send {PROTOBUF_CONTENT_TYPE} or {JSON_CONTENT_TYPE}"
        )))
    }
}

fn compression(headers: &HeaderMap) -> Result<Compression, CollectorError> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(Compression::Identity);
    };
    let encoding = String::from_utf8_lossy(value.as_bytes());
    let encoding = encoding.trim();
    if encoding.eq_ignore_ascii_case("gzip") {
        Ok(Compression::Gzip)
    } else if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        Ok(Compression::Identity)
    } else {
        Err(CollectorError::UnsupportedMediaType(format!(
            "unsupported content encoding {encoding:?}: send gzip or identity"
        )))
    }
}

/// Reads the whole body, refusing it as soon as it passes `limit` bytes or does not fit in
/// the memory budget (a declared length is reserved whole, before reading).
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Bytes, CollectorError> {
    let declared_length = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > limit as u64) {
        return Err(CollectorError::TooLarge { limit });
    }
    let declared = declared_length.unwrap_or(0) as usize;
    reservation.grow_to(declared)?;
    let mut body = body;
    let mut collected = BytesMut::with_capacity(declared);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            CollectorError::InvalidRequest(format!("could not read the request body: {error}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let total = collected.len() + data.len();
        if total > limit {
            return Err(CollectorError::TooLarge { limit });
        }
        reservation.grow_to(total)?;
        collected.extend_from_slice(&data);
    }
    Ok(collected.freeze())
}

/// The body as the decoder reads it: as sent, or inflated from gzip within `limit`.
fn inflate(
    raw: Bytes,
    compression: Compression,
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Bytes, CollectorError> {
    match compression {
        Compression::Identity => Ok(raw),
        Compression::Gzip => {
            let mut inflated = gunzip(&raw, limit, reservation)?;
            // Kept until the sink has it: give back what doubling the buffer left unused.
            inflated.shrink_to_fit();
            Ok(Bytes::from(inflated))
        }
    }
}

/// Inflates gzip (all members) into a buffer that never grows past `limit + 1` bytes, each
/// growth reserved in the memory budget first.
fn gunzip(
    compressed: &[u8],
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Vec<u8>, CollectorError> {
    const FIRST_CHUNK: usize = 64 * 1024;
    let cap = limit.saturating_add(1);
    let mut decoder = MultiGzDecoder::new(compressed);
    let first = compressed.len().saturating_mul(4).max(FIRST_CHUNK).min(cap);
    reservation.grow(first)?;
    let mut out = vec![0; first];
    let mut filled = 0;
    loop {
        if filled == out.len() {
            if out.len() >= cap {
                break;
            }
            let grown = out.len().saturating_mul(2).max(FIRST_CHUNK).min(cap);
            reservation.grow(grown - out.len())?;
            out.resize(grown, 0);
        }
        match decoder.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(CollectorError::InvalidRequest(format!(
                    "request body is not valid gzip: {error}"
                )));
            }
        }
    }
    if filled > limit {
        return Err(CollectorError::TooLarge { limit });
    }
    out.truncate(filled);
    Ok(out)
}

fn success_response(response: &ExportTraceServiceResponse, encoding: PayloadEncoding) -> Response {
    let body = match encoding {
        PayloadEncoding::Protobuf => response.encode_to_vec(),
        PayloadEncoding::Json => export_response_json(response).into_bytes(),
    };
    (
        StatusCode::OK,
        [(CONTENT_TYPE, content_type(encoding))],
        body,
    )
        .into_response()
}

/// OTLP/JSON for the response, written by hand: the opentelemetry-proto serde derive writes
/// `"partialSuccess":null` on full success (the spec wants the field absent) and
/// `rejectedSpans` as a number (OTLP/JSON writes 64-bit integers as strings).
fn export_response_json(response: &ExportTraceServiceResponse) -> String {
    let Some(partial) = &response.partial_success else {
        return "{}".to_string();
    };
    serde_json::json!({
        "partialSuccess": {
            "rejectedSpans": partial.rejected_spans.to_string(),
            "errorMessage": partial.error_message,
        }
    })
    .to_string()
}

/// The one place where errors become OTLP/HTTP responses. The body is a `google.rpc.Status`
/// in the request's encoding, or plain text when the request's encoding is unknown.
fn error_response(error: &CollectorError, encoding: Option<PayloadEncoding>) -> Response {
    use tonic::Code;
    let (status, code) = match error {
        CollectorError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, Code::InvalidArgument),
        CollectorError::OneByOne(_) => (StatusCode::CONFLICT, Code::FailedPrecondition),
        CollectorError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted),
        CollectorError::UnsupportedMediaType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, Code::InvalidArgument)
        }
        CollectorError::MethodNotAllowed(_) => {
            (StatusCode::METHOD_NOT_ALLOWED, Code::Unimplemented)
        }
        CollectorError::Auth(AuthError::Unauthenticated) => {
            (StatusCode::UNAUTHORIZED, Code::Unauthenticated)
        }
        CollectorError::Auth(AuthError::Forbidden(_)) => {
            (StatusCode::FORBIDDEN, Code::PermissionDenied)
        }
        CollectorError::RateLimited { .. } => {
            (StatusCode::TOO_MANY_REQUESTS, Code::ResourceExhausted)
        }
        CollectorError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable),
        CollectorError::Sink(sink_error) if sink_error.retry_after().is_some() => {
            (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable)
        }
        CollectorError::Sink(_) | CollectorError::Server(_) | CollectorError::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal)
        }
    };
    let message = error.to_string();
    if status.is_server_error() {
        tracing::warn!(%status, %message, "otlp/http export failed");
    } else {
        tracing::debug!(%status, %message, "otlp/http export refused");
    }
    let mut response = match encoding {
        None => (
            status,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            message,
        )
            .into_response(),
        Some(encoding) => {
            let body = match encoding {
                PayloadEncoding::Protobuf => tonic_types::Status {
                    code: code.into(),
                    message,
                    details: Vec::new(),
                }
                .encode_to_vec(),
                PayloadEncoding::Json => {
                    serde_json::json!({ "code": i32::from(code), "message": message })
                        .to_string()
                        .into_bytes()
                }
            };
            (status, [(CONTENT_TYPE, content_type(encoding))], body).into_response()
        }
    };
    if let Some(retry_after) = error.retry_after() {
        // Retry-After is whole seconds; round up so the client never comes back too early.
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    if let CollectorError::Auth(AuthError::Unauthenticated) = error {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let CollectorError::MethodNotAllowed(_) = error {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::INLINE_DECODE_BYTES;
    use crate::sink::SinkError;
    use crate::test_support::*;
    use flate2::Compression as GzipLevel;
    use flate2::write::GzEncoder;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use std::io::Write as _;
    use std::time::Duration;
    use tower::ServiceExt as _;

    const MIB: usize = 1024 * 1024;

    struct Reply {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Reply {
        fn content_type(&self) -> &str {
            self.headers
                .get(CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
        }

        fn protobuf_status(&self) -> tonic_types::Status {
            assert_eq!(self.content_type(), PROTOBUF_CONTENT_TYPE);
            tonic_types::Status::decode(self.body.clone()).expect("body is a google.rpc.Status")
        }

        fn json(&self) -> serde_json::Value {
            assert_eq!(self.content_type(), JSON_CONTENT_TYPE);
            serde_json::from_slice(&self.body).expect("body is JSON")
        }
    }

    async fn send(
        sink: Arc<TestSink>,
        limit: usize,
        method: Method,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let config = CollectorConfig {
            max_request_bytes: limit,
            ..CollectorConfig::default()
        };
        send_with(sink, config, method, headers, body).await
    }

    async fn send_with(
        sink: Arc<TestSink>,
        config: CollectorConfig,
        method: Method,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut request = http::Request::builder().method(method).uri(TRACES_PATH);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::from(body)).expect("request");
        let response = http_router(sink, config)
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A POST with only a Content-Type, under `config`.
    async fn post_with(
        sink: Arc<TestSink>,
        config: CollectorConfig,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let headers = [("content-type", content_type)];
        send_with(sink, config, Method::POST, &headers, body).await
    }

    async fn post(sink: Arc<TestSink>, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        send(sink, 64 * MIB, Method::POST, headers, body).await
    }

    fn protobuf_body(spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>) -> Vec<u8> {
        request_with(spans).encode_to_vec()
    }

    fn json_body(spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>) -> Vec<u8> {
        serde_json::to_vec(&request_with(spans)).expect("serialize")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), GzipLevel::default());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("gzip")
    }

    fn with_invalid_trace_id() -> opentelemetry_proto::tonic::trace::v1::Span {
        let mut span = valid_span(2);
        span.trace_id = vec![0; 16];
        span
    }

    #[tokio::test]
    async fn protobuf_export_is_stored_and_acknowledged() {
        let sink = Arc::new(TestSink::accepting());
        let reply = post(
            sink.clone(),
            &[("content-type", PROTOBUF_CONTENT_TYPE)],
            protobuf_body(vec![valid_span(1), valid_span(2)]),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content_type(), PROTOBUF_CONTENT_TYPE);
        let response = ExportTraceServiceResponse::decode(reply.body).expect("response");
        assert_eq!(response.partial_success, None);
        assert_eq!(sink.rows(), 2);
    }

    #[tokio::test]
    async fn json_export_is_answered_in_json() {
        let sink = Arc::new(TestSink::accepting());
        let reply = post(
            sink.clone(),
            &[("content-type", "Application/JSON; charset=utf-8")],
            json_body(vec![valid_span(1)]),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(&reply.body[..], b"{}");
        assert_eq!(reply.content_type(), JSON_CONTENT_TYPE);
        assert_eq!(sink.rows(), 1);
    }

    #[tokio::test]
    async fn partial_success_reports_rejected_spans_in_the_request_encoding() {
        let spans = || vec![valid_span(1), with_invalid_trace_id()];
        let sink = Arc::new(TestSink::accepting());
        let reply = post(
            sink.clone(),
            &[("content-type", JSON_CONTENT_TYPE)],
            json_body(spans()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.json(),
            serde_json::json!({"partialSuccess": {
                "rejectedSpans": "1",
                "errorMessage": "rejected 1 of 2 spans: 1 with an invalid trace_id"
            }})
        );
        let reply = post(
            sink.clone(),
            &[("content-type", PROTOBUF_CONTENT_TYPE)],
            protobuf_body(spans()),
        )
        .await;
        let response = ExportTraceServiceResponse::decode(reply.body).expect("response");
        let partial = response.partial_success.expect("partial success");
        assert_eq!(partial.rejected_spans, 1);
        assert_eq!(sink.rows(), 2, "the valid span of each request is stored");
    }

    #[tokio::test]
    async fn spans_older_than_retention_are_refused_in_the_partial_success_not_stored() {
        // valid_span(1) started in 1970; the other one now.
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64;
        let mut current = valid_span(2);
        current.start_time_unix_nano = now_ns;
        current.end_time_unix_nano = now_ns + 1_000;
        let spans = || vec![valid_span(1), current.clone(), with_invalid_trace_id()];
        let config = CollectorConfig {
            retention: Some(Duration::from_secs(7 * 86_400)),
            ..CollectorConfig::default()
        };
        let expected = "rejected 2 of 3 spans: 1 with an invalid trace_id, 1 started before \
                        the retention horizon (1w) and would be deleted at once";
        for (content_type, body) in [
            (PROTOBUF_CONTENT_TYPE, protobuf_body(spans())),
            (JSON_CONTENT_TYPE, json_body(spans())),
        ] {
            let sink = Arc::new(TestSink::accepting());
            let reply = post_with(sink.clone(), config.clone(), content_type, body).await;
            assert_eq!(reply.status, StatusCode::OK, "{content_type}");
            let partial = if content_type == JSON_CONTENT_TYPE {
                let json = reply.json();
                (
                    json["partialSuccess"]["rejectedSpans"].to_string(),
                    json["partialSuccess"]["errorMessage"].to_string(),
                )
            } else {
                let partial = ExportTraceServiceResponse::decode(reply.body)
                    .expect("response")
                    .partial_success
                    .expect("partial success");
                (
                    format!("\"{}\"", partial.rejected_spans),
                    format!("{:?}", partial.error_message),
                )
            };
            assert_eq!(
                partial,
                ("\"2\"".to_string(), format!("{expected:?}")),
                "{content_type}"
            );
            assert_eq!(sink.rows(), 1, "only the current span is stored");
        }
        // Every span too old: nothing reaches the sink, and the client is told why.
        let sink = Arc::new(TestSink::accepting());
        let body = json_body(vec![valid_span(1)]);
        let reply = post_with(sink.clone(), config, JSON_CONTENT_TYPE, body).await;
        assert_eq!(reply.json()["partialSuccess"]["rejectedSpans"], "1");
        assert!(sink.batches.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn a_value_nested_one_level_past_the_limit_is_refused_alike_in_protobuf_and_json() {
        use crate::decode::MAX_VALUE_NESTING;
        for (levels, accepted) in [(MAX_VALUE_NESTING, true), (MAX_VALUE_NESTING + 1, false)] {
            let mut span = valid_span(1);
            span.attributes = vec![KeyValue {
                key: "deep".into(),
                value: Some(nested_value(levels)),
                key_strindex: 0,
            }];
            for (content_type, body) in [
                (PROTOBUF_CONTENT_TYPE, protobuf_body(vec![span.clone()])),
                (JSON_CONTENT_TYPE, json_body(vec![span.clone()])),
            ] {
                let sink = Arc::new(TestSink::accepting());
                let reply = post(sink.clone(), &[("content-type", content_type)], body).await;
                let case = format!("{levels} levels as {content_type}");
                if accepted {
                    assert_eq!(reply.status, StatusCode::OK, "{case}");
                    assert_eq!(sink.rows(), 1, "{case}");
                    continue;
                }
                assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{case}");
                let message = if content_type == JSON_CONTENT_TYPE {
                    reply.json()["message"]
                        .as_str()
                        .expect("message")
                        .to_string()
                } else {
                    reply.protobuf_status().message
                };
                assert_eq!(
                    message,
                    "an attribute value is nested deeper than 32 levels of arrays and \
                     key-value lists: flatten it or send it as a string",
                    "{case}"
                );
                assert!(sink.batches.lock().expect("lock").is_empty(), "{case}");
            }
        }
    }

    #[tokio::test]
    async fn an_empty_request_succeeds_without_touching_the_sink() {
        let sink = Arc::new(TestSink::answering(|| {
            Err(SinkError::Internal("unused".into()))
        }));
        let reply = post(
            sink.clone(),
            &[("content-type", PROTOBUF_CONTENT_TYPE)],
            Vec::new(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(sink.batches.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn unknown_content_type_or_encoding_is_415() {
        let cases: [(Headers, &str, Option<&str>); 4] = [
            (&[], "text/plain; charset=utf-8", None),
            (
                &[("content-type", "text/plain")],
                "text/plain; charset=utf-8",
                None,
            ),
            (
                &[("content-type", "application/protobuf")],
                "text/plain; charset=utf-8",
                None,
            ),
            (
                &[
                    ("content-type", JSON_CONTENT_TYPE),
                    ("content-encoding", "br"),
                ],
                JSON_CONTENT_TYPE,
                Some("unsupported content encoding \"br\": send gzip or identity"),
            ),
        ];
        for (headers, content_type, json_message) in cases {
            let sink = Arc::new(TestSink::accepting());
            let reply = post(sink, headers, protobuf_body(vec![valid_span(1)])).await;
            assert_eq!(
                reply.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{headers:?}"
            );
            assert_eq!(reply.content_type(), content_type, "{headers:?}");
            match json_message {
                Some(message) => assert_eq!(reply.json()["message"], message),
                None => {
                    let text = String::from_utf8_lossy(&reply.body);
                    assert!(
                        text.contains("application/x-protobuf or application/json"),
                        "{text}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        let sink = Arc::new(TestSink::accepting());
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let reply = send(
                sink.clone(),
                MIB,
                method.clone(),
                &[("content-type", PROTOBUF_CONTENT_TYPE)],
                Vec::new(),
            )
            .await;
            assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(
                reply.headers.get(ALLOW).map(|v| v.as_bytes()),
                Some(&b"POST"[..])
            );
            assert_eq!(
                reply.protobuf_status().code,
                i32::from(tonic::Code::Unimplemented)
            );
        }
    }

    #[tokio::test]
    async fn garbage_is_400_with_a_status_in_the_request_encoding() {
        let sink = Arc::new(TestSink::accepting());
        let reply = post(
            sink.clone(),
            &[("content-type", PROTOBUF_CONTENT_TYPE)],
            vec![0xff, 0xff, 0xff, 0xff],
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        let status = reply.protobuf_status();
        assert_eq!(status.code, i32::from(tonic::Code::InvalidArgument));
        assert!(
            status.message.starts_with(
                "request body is not a valid OTLP ExportTraceServiceRequest protobuf: "
            ),
            "{}",
            status.message
        );

        let reply = post(
            sink.clone(),
            &[("content-type", JSON_CONTENT_TYPE)],
            b"{\"resourceSpans\": 7}".to_vec(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        let json = reply.json();
        assert_eq!(json["code"], i32::from(tonic::Code::InvalidArgument));
        let message = json["message"].as_str().expect("message");
        assert!(
            message.starts_with("request body is not valid OTLP/JSON: "),
            "{message}"
        );
        assert!(message.contains("line 1 column"), "{message}");

        let reply = post(
            sink.clone(),
            &[
                ("content-type", PROTOBUF_CONTENT_TYPE),
                ("content-encoding", "gzip"),
            ],
            b"not gzip at all".to_vec(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(
            reply
                .protobuf_status()
                .message
                .starts_with("request body is not valid gzip")
        );
        assert!(sink.batches.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn gzip_bodies_are_inflated() {
        let sink = Arc::new(TestSink::accepting());
        for encoding in ["gzip", "GZIP"] {
            let reply = post(
                sink.clone(),
                &[
                    ("content-type", PROTOBUF_CONTENT_TYPE),
                    ("content-encoding", encoding),
                ],
                gzip(&protobuf_body(vec![valid_span(1)])),
            )
            .await;
            assert_eq!(reply.status, StatusCode::OK);
        }
        let reply = post(
            sink.clone(),
            &[
                ("content-type", JSON_CONTENT_TYPE),
                ("content-encoding", "identity"),
            ],
            json_body(vec![valid_span(1)]),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(sink.rows(), 3);
    }

    #[tokio::test]
    async fn a_large_body_is_decoded_off_the_runtime() {
        let sink = Arc::new(TestSink::accepting());
        let spans: Vec<_> = (1..=200)
            .map(|id| {
                let mut span = valid_span(id);
                span.attributes = vec![key_value("payload", &"x".repeat(1500))];
                span
            })
            .collect();
        let body = protobuf_body(spans);
        assert!(body.len() > INLINE_DECODE_BYTES);
        let reply = post(
            sink.clone(),
            &[("content-type", PROTOBUF_CONTENT_TYPE)],
            body,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(sink.rows(), 200);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_413_before_and_after_decompression() {
        let over_raw = vec![0u8; MIB + 1];
        let bomb = gzip(&vec![0u8; 10 * MIB]);
        assert!(bomb.len() < 64 * 1024, "the bomb is small on the wire");
        let exactly_at_limit_then_one_more = gzip(&vec![0u8; MIB + 1]);
        let cases: [(&str, Headers, Vec<u8>); 5] = [
            (
                "declared length over the limit",
                &[
                    ("content-type", PROTOBUF_CONTENT_TYPE),
                    ("content-length", "1048577"),
                ],
                vec![0u8; MIB + 1],
            ),
            (
                "raw protobuf",
                &[("content-type", PROTOBUF_CONTENT_TYPE)],
                over_raw.clone(),
            ),
            ("raw json", &[("content-type", JSON_CONTENT_TYPE)], over_raw),
            (
                "gzip bomb",
                &[
                    ("content-type", PROTOBUF_CONTENT_TYPE),
                    ("content-encoding", "gzip"),
                ],
                bomb,
            ),
            (
                "one byte over after inflating",
                &[
                    ("content-type", PROTOBUF_CONTENT_TYPE),
                    ("content-encoding", "gzip"),
                ],
                exactly_at_limit_then_one_more,
            ),
        ];
        for (name, headers, body) in cases {
            let sink = Arc::new(TestSink::accepting());
            let reply = send(sink.clone(), MIB, Method::POST, headers, body).await;
            assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{name}");
            let (code, message) = if reply.content_type() == JSON_CONTENT_TYPE {
                let json = reply.json();
                (
                    json["code"].as_i64(),
                    json["message"].as_str().map(str::to_string),
                )
            } else {
                let status = reply.protobuf_status();
                (Some(i64::from(status.code)), Some(status.message))
            };
            assert_eq!(
                code,
                Some(i64::from(i32::from(tonic::Code::ResourceExhausted))),
                "{name}"
            );
            assert_eq!(
                message.as_deref(),
                Some(
                    "request is larger than the 1048576-byte limit after decompression: send smaller batches"
                ),
                "{name}"
            );
            assert!(sink.batches.lock().expect("lock").is_empty(), "{name}");
        }
    }

    #[test]
    fn the_serde_derive_would_write_a_null_partial_success() {
        // Why `export_response_json` exists: the derive does not omit an unset field.
        let derived = serde_json::to_string(&ExportTraceServiceResponse::default()).expect("json");
        assert_eq!(derived, r#"{"partialSuccess":null}"#);
        assert_eq!(
            export_response_json(&ExportTraceServiceResponse::default()),
            "{}"
        );
    }

    fn unlimited() -> Reservation {
        Arc::new(flowscope_base::memory::MemoryBudget::unlimited())
            .admit()
            .expect("an unlimited budget admits")
    }

    #[test]
    fn gunzip_stops_at_the_limit() {
        let compressed = gzip(&vec![7u8; 1000]);
        assert_eq!(
            gunzip(&compressed, 1000, &mut unlimited())
                .map(|out| out.len())
                .ok(),
            Some(1000)
        );
        assert!(matches!(
            gunzip(&compressed, 999, &mut unlimited()),
            Err(CollectorError::TooLarge { limit: 999 })
        ));
        assert!(matches!(
            gunzip(&compressed, 0, &mut unlimited()),
            Err(CollectorError::TooLarge { limit: 0 })
        ));
        let two_members = [gzip(b"ab"), gzip(b"cd")].concat();
        assert_eq!(
            gunzip(&two_members, 10, &mut unlimited()).ok(),
            Some(b"abcd".to_vec())
        );
    }

    #[tokio::test]
    async fn sink_errors_map_to_retryable_or_not() {
        let cases: [(Outcome, StatusCode, Option<&str>); 4] = [
            (
                || {
                    Err(SinkError::Overloaded {
                        retry_after: Duration::from_millis(2_500),
                    })
                },
                StatusCode::SERVICE_UNAVAILABLE,
                Some("3"),
            ),
            (
                || {
                    Err(SinkError::Overloaded {
                        retry_after: Duration::from_millis(10),
                    })
                },
                StatusCode::SERVICE_UNAVAILABLE,
                Some("1"),
            ),
            (
                || Err(SinkError::Unavailable("disk full".into())),
                StatusCode::SERVICE_UNAVAILABLE,
                Some("5"),
            ),
            (
                || Err(SinkError::Internal("wal corrupt".into())),
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
            ),
        ];
        for (outcome, status, retry_after) in cases {
            let sink = Arc::new(TestSink::answering(outcome));
            let reply = post(
                sink,
                &[("content-type", JSON_CONTENT_TYPE)],
                json_body(vec![valid_span(1)]),
            )
            .await;
            assert_eq!(reply.status, status);
            assert_eq!(
                reply.headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()),
                retry_after
            );
            let expected_code = if status == StatusCode::SERVICE_UNAVAILABLE {
                tonic::Code::Unavailable
            } else {
                tonic::Code::Internal
            };
            assert_eq!(reply.json()["code"], i32::from(expected_code));
        }
        let sink = Arc::new(TestSink::answering(|| {
            Err(SinkError::Overloaded {
                retry_after: Duration::from_secs(2),
            })
        }));
        let reply = post(
            sink,
            &[("content-type", PROTOBUF_CONTENT_TYPE)],
            protobuf_body(vec![valid_span(1)]),
        )
        .await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            reply.protobuf_status().message,
            "span pipeline is full: retry in 2000 ms"
        );
    }

    #[tokio::test]
    async fn tokens_decide_the_tenant_and_refuse_everyone_else() {
        let sink = Arc::new(TestSink::accepting());
        let body = protobuf_body(vec![valid_span(1)]);
        let post_as = |headers: Vec<(&'static str, String)>| {
            let sink = sink.clone();
            let body = body.clone();
            async move {
                let mut all = vec![(CONTENT_TYPE.as_str(), PROTOBUF_CONTENT_TYPE.to_string())];
                all.extend(headers);
                let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
                send_with(sink, config_with_tokens(), Method::POST, &pairs, body).await
            }
        };
        let bearer = |token: &str| ("authorization", format!("Bearer {token}"));

        let accepted = post_as(vec![bearer(ACME_INGEST)]).await;
        assert_eq!(accepted.status, StatusCode::OK);
        let confirmed = post_as(vec![
            bearer(GLOBEX_INGEST),
            ("x-scope-orgid", "globex".into()),
        ])
        .await;
        assert_eq!(confirmed.status, StatusCode::OK);
        assert_eq!(*sink.tenants.lock().unwrap(), ["acme", "globex"]);

        // Missing, malformed and unknown tokens all get the same answer, which names nothing.
        for headers in [
            vec![],
            vec![("authorization", "Basic YWNtZTp4".to_string())],
            vec![bearer("acme-ingest-token-0002")],
            vec![bearer("")],
        ] {
            let refused = post_as(headers).await;
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
            assert_eq!(refused.headers[WWW_AUTHENTICATE], "Bearer");
            let status = refused.protobuf_status();
            assert_eq!(status.code, i32::from(tonic::Code::Unauthenticated));
            assert!(!status.message.contains("acme") && !status.message.contains("globex"));
        }
        // A token may not write into another tenant by naming it, nor send with a read token.
        let crossed = post_as(vec![
            bearer(ACME_INGEST),
            ("x-scope-orgid", "globex".into()),
        ])
        .await;
        assert_eq!(crossed.status, StatusCode::FORBIDDEN);
        assert_eq!(
            crossed.protobuf_status().code,
            i32::from(tonic::Code::PermissionDenied)
        );
        let reader = post_as(vec![bearer(ACME_READ)]).await;
        assert_eq!(reader.status, StatusCode::FORBIDDEN);
        // Several tenant values are refused even when each names the token's own tenant:
        // only the first was checked, and another reader may take another one.
        for tenants in [
            vec!["acme", "acme"],
            vec!["acme", "globex"],
            vec!["acme,globex"],
        ] {
            let mut headers = vec![bearer(ACME_INGEST)];
            headers.extend(tenants.iter().map(|t| ("x-scope-orgid", t.to_string())));
            let several = post_as(headers).await;
            assert_eq!(several.status, StatusCode::FORBIDDEN, "{tenants:?}");
            let status = several.protobuf_status();
            assert_eq!(status.code, i32::from(tonic::Code::PermissionDenied));
            assert!(
                status.message.contains("more than once"),
                "{}",
                status.message
            );
        }
        assert_eq!(sink.rows(), 2, "no refused request reached the sink");
    }

    #[tokio::test]
    async fn a_tenant_over_its_rate_is_told_when_to_retry() {
        let sink = Arc::new(TestSink::accepting());
        let config = config_with_tokens();
        let headers = [
            ("content-type", JSON_CONTENT_TYPE),
            ("authorization", "Bearer globex-ingest-token-01"),
        ];
        // globex may send 10 spans a second with a one-second burst: 8 fit, the next 8 wait.
        let body = json_body((1..=8).map(valid_span).collect());
        let send = || {
            send_with(
                sink.clone(),
                config.clone(),
                Method::POST,
                &headers,
                body.clone(),
            )
        };
        let first = send().await;
        assert_eq!(first.status, StatusCode::OK);
        let second = send().await;
        assert_eq!(
            second.status,
            StatusCode::OK,
            "a burst of up to a second is let through"
        );
        let third = send().await;
        assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            third.json()["code"],
            i32::from(tonic::Code::ResourceExhausted)
        );
        let seconds: u64 = third.headers[RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&seconds), "Retry-After {seconds}");
        assert_eq!(sink.rows(), 16);
        // Another tenant is not slowed by globex's limit.
        let acme = [
            ("content-type", JSON_CONTENT_TYPE),
            ("authorization", "Bearer acme-ingest-token-0001"),
        ];
        let body = json_body((1..=50).map(valid_span).collect());
        let other = send_with(sink.clone(), config, Method::POST, &acme, body).await;
        assert_eq!(other.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_body_over_the_memory_budget_is_refused_503_before_it_is_read() {
        let sink = Arc::new(TestSink::accepting());
        let memory = Arc::new(flowscope_base::memory::MemoryBudget::new(1 << 20, 1024, 0));
        let config = CollectorConfig {
            memory: memory.clone(),
            ..CollectorConfig::default()
        };
        let body = protobuf_body((1..=40).map(valid_span).collect());
        assert!(body.len() > 1024);
        let reply = post_with(sink.clone(), config.clone(), PROTOBUF_CONTENT_TYPE, body).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.headers.get(RETRY_AFTER).is_some(), "Retry-After");
        assert_eq!(
            reply.protobuf_status().code,
            tonic::Code::Unavailable as i32
        );
        let body = protobuf_body(vec![valid_span(1)]);
        let small = post_with(sink.clone(), config, PROTOBUF_CONTENT_TYPE, body).await;
        assert_eq!(small.status, StatusCode::OK);
        assert_eq!(sink.rows(), 1);
        assert_eq!(memory.figures().in_flight_bytes, 0);
    }
}

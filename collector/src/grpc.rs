//! The OTLP/gRPC receiver: the `TraceService/Export` unary call, gzip accepted, with the
//! status codes the OTLP specification asks for.
//!
//! tonic frames, inflates and size-checks the request, then hands the handler its bytes,
//! which the shared accept step (`accept.rs`) decodes and sends to the sink. tonic reports its own framing errors
//! before the handler runs; a response layer (`rewrite_codec_status`) translates the ones
//! OTLP clients would misread (an over-size message is OUT_OF_RANGE, which clients retry)
//! into [`CollectorError`]s and sends them through the same mapping as ours, `grpc_status`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes};
use flowscope_auth::{AuthError, Principal};
use flowscope_base::memory::Reservation;
use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::SERVICE_NAME;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::Server;
use tonic::transport::server::Connected;
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstEncoder;
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::accept::{Encoding, Receiver, Routing, outcome};
use crate::sink::SpanSink;
use crate::{CollectorConfig, CollectorError};

/// The one method we serve, as gRPC names it.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The OTLP specification's recommended cap on response size.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Concurrent export calls per HTTP/2 connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Streams a client may open and reset before they are accepted (HTTP/2 rapid reset).
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 32;

/// Serves OTLP/gRPC TraceService, and the services of `others` (a cluster node's query
/// worker), on the connections `incoming` yields until `shutdown` resolves. The caller accepts them: the binary's accept layer caps how many are open,
/// closes idle ones and sets `TCP_NODELAY` (`Server::tcp_nodelay` is ignored with an
/// incoming stream); tests pass a plain [`TcpIncoming`].
pub async fn serve_grpc<I, IO, IE>(
    incoming: I,
    sink: Arc<dyn SpanSink>,
    config: CollectorConfig,
    others: Option<tonic::service::Routes>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CollectorError>
where
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = config.max_request_bytes;
    let keepalive = config.http2_keepalive;
    let mut compression = EnabledCompressionEncodings::default();
    compression.enable(CompressionEncoding::Gzip);
    let service = TraceExportServer {
        receiver: Arc::new(Receiver {
            sink,
            config,
            protocol: GRPC,
        }),
        compression,
        max_decoding_message_size: limit,
    };
    Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
        .http2_keepalive_interval(keepalive.map(|k| k.interval))
        .http2_keepalive_timeout(keepalive.map(|k| k.timeout))
        .layer(tower::util::MapResponseLayer::new(
            move |response: http::Response<tonic::body::Body>| {
                rewrite_codec_status(response, limit)
            },
        ))
        .add_routes(others.unwrap_or_default().add_service(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// The `TraceService` server, written out rather than generated: the generated one hands the
/// handler prost's `ExportTraceServiceRequest`, and we want the request's bytes, which
/// `wire.rs` decodes straight into Arrow. Otherwise it does what the generated server does
/// (gzip both ways, the size limits, UNIMPLEMENTED for any other path).
#[derive(Clone)]
struct TraceExportServer {
    receiver: Arc<Receiver>,
    compression: EnabledCompressionEncodings,
    max_decoding_message_size: usize,
}

impl NamedService for TraceExportServer {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> tower::Service<http::Request<B>> for TraceExportServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        // Who is calling is settled from the headers before a byte of the message is read.
        let principal = match self.receiver.authorize(request.headers()) {
            Ok(principal) => principal,
            Err(error) => {
                self.receiver.count_refusal(None, &error);
                let status = grpc_status(&error);
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        // Then refused before tonic reads a byte when memory is short; the body reserves its
        // bytes as they arrive, and the handler takes the same reservation over.
        let held = match self.receiver.config.memory.admit() {
            Ok(reservation) => HeldMemory(Arc::new(Mutex::new(Some(reservation)))),
            Err(refusal) => {
                let error = refusal.into();
                self.receiver.count_refusal(Some(&principal.tenant), &error);
                let status = grpc_status(&error);
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        // Only a node of a cluster reads the headers routing needs.
        let routing = if self.receiver.config.cluster.is_some() {
            Routing::of(request.headers())
        } else {
            Routing::default()
        };
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(
            parts,
            ReservedBody {
                inner: Box::pin(body),
                held: held.clone(),
            },
        );
        let server = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RequestBytesCodec)
                .apply_compression_config(server.compression, server.compression)
                .apply_max_message_size_config(
                    Some(server.max_decoding_message_size),
                    Some(MAX_RESPONSE_BYTES),
                );
            let principal = Arc::new(principal);
            let counted = Arc::new(AtomicBool::new(false));
            let method = ExportMethod {
                receiver: server.receiver.clone(),
                principal: principal.clone(),
                held,
                counted: counted.clone(),
                routing,
            };
            let response = grpc.unary(method, request).await;
            if !counted.load(Ordering::Relaxed) {
                // Refused while tonic read the message (too large, or the memory budget
                // spent), before the handler ran.
                let outcome =
                    match codec_error(response.headers(), server.max_decoding_message_size) {
                        Some(error) => outcome(Err(&error)),
                        None => match Status::from_header_map(response.headers()).map(|s| s.code())
                        {
                            Some(Code::Unavailable) => "refused",
                            _ => "invalid",
                        },
                    };
                server
                    .receiver
                    .count_request(Some(&principal.tenant), outcome);
            }
            Ok(response)
        })
    }
}

struct ExportMethod {
    receiver: Arc<Receiver>,
    principal: Arc<Principal>,
    /// The memory reserved for the call, which the body grew while tonic read it.
    held: HeldMemory,
    /// Set once the handler has counted the request's outcome.
    counted: Arc<AtomicBool>,
    routing: Routing,
}

impl UnaryService<Bytes> for ExportMethod {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<'static, Result<Response<ExportTraceServiceResponse>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let receiver = self.receiver.clone();
        let principal = self.principal.clone();
        let reservation = self.held.take();
        let counted = self.counted.clone();
        let routing = std::mem::take(&mut self.routing);
        Box::pin(async move {
            let body = request.into_inner();
            let result = match reservation {
                Some(reservation) => {
                    let inline = Encoding::Protobuf.decodes_inline(body.len());
                    receiver
                        .accept(
                            routing,
                            &principal,
                            reservation,
                            Encoding::Protobuf,
                            inline,
                            |held| {
                                // The frames were reserved as they arrived; tonic may have
                                // inflated them into a larger message.
                                held.grow_to(body.len())?;
                                Ok(body)
                            },
                        )
                        .await
                }
                // Only a bug gets here: the call is made once, after `call` reserved.
                None => Err(CollectorError::Internal(
                    "the export call's memory reservation was already taken".into(),
                )),
            };
            receiver.count_answer(&principal.tenant, &result);
            counted.store(true, Ordering::Relaxed);
            result
                .map(Response::new)
                .map_err(|error| grpc_status(&error))
        })
    }
}

/// Requests arrive as their (inflated) bytes; responses are encoded by prost.
struct RequestBytesCodec;

impl Codec for RequestBytesCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ProstEncoder<ExportTraceServiceResponse>;
    type Decoder = RequestBytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestBytesDecoder
    }
}

struct RequestBytesDecoder;

impl Decoder for RequestBytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, source: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // The buffer holds exactly one message; taking it as `Bytes` splits it off without
        // a copy.
        Ok(Some(source.copy_to_bytes(source.remaining())))
    }
}

/// The `protocol` label of this receiver's figures.
const GRPC: &str = "grpc";

/// The memory one export call holds, grown by its body while tonic reads it, then taken
/// over by the handler (tonic reads the whole message before calling it) and given back
/// when the call is answered.
#[derive(Clone)]
struct HeldMemory(Arc<Mutex<Option<Reservation>>>);

impl HeldMemory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Reservation>> {
        match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn take(&self) -> Option<Reservation> {
        self.lock().take()
    }
}

/// A request body that reserves each frame in the memory budget before tonic buffers it, and
/// ends the call with UNAVAILABLE (tonic passes a body's `Status` error through) once the
/// budget is spent.
struct ReservedBody<B> {
    inner: Pin<Box<B>>,
    held: HeldMemory,
}

impl<B> http_body::Body for ReservedBody<B>
where
    B: http_body::Body,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = B::Data;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = self.get_mut();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |data| data.remaining());
                let grown = this.held.lock().as_mut().map(|held| held.grow(len));
                if let Some(Err(refusal)) = grown {
                    let status = grpc_status(&refusal.into());
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The one place where errors become gRPC statuses.
fn grpc_status(error: &CollectorError) -> Status {
    let message = error.to_string();
    let code = match error {
        CollectorError::InvalidRequest(_) | CollectorError::UnsupportedMediaType(_) => {
            Code::InvalidArgument
        }
        // Non-retryable: RESOURCE_EXHAUSTED without RetryInfo, as the OTLP spec requires.
        CollectorError::TooLarge { .. } => Code::ResourceExhausted,
        CollectorError::OneByOne(_) => Code::FailedPrecondition,
        CollectorError::MethodNotAllowed(_) => Code::Unimplemented,
        CollectorError::Auth(AuthError::Unauthenticated) => Code::Unauthenticated,
        CollectorError::Auth(AuthError::Forbidden(_)) => Code::PermissionDenied,
        CollectorError::RateLimited { retry_after } => {
            tracing::debug!(%message, "otlp/grpc export rate-limited");
            return Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(*retry_after)),
            );
        }
        CollectorError::Sink(_) | CollectorError::Overloaded(_) => match error.retry_after() {
            Some(retry_after) => {
                tracing::debug!(%message, "otlp/grpc export deferred");
                return Status::with_error_details(
                    Code::Unavailable,
                    message,
                    ErrorDetails::with_retry_info(Some(retry_after)),
                );
            }
            None => Code::Internal,
        },
        CollectorError::Server(_) | CollectorError::Internal(_) => Code::Internal,
    };
    if code == Code::Internal {
        tracing::warn!(%message, "otlp/grpc export failed");
    }
    Status::new(code, message)
}

/// Translates the tonic codec errors that OTLP clients would misread, in a trailers-only
/// response (which is how tonic reports errors found before the handler runs).
fn rewrite_codec_status(
    mut response: http::Response<tonic::body::Body>,
    limit: usize,
) -> http::Response<tonic::body::Body> {
    let Some(error) = codec_error(response.headers(), limit) else {
        return response;
    };
    let status = grpc_status(&error);
    let headers = response.headers_mut();
    headers.remove(Status::GRPC_STATUS);
    headers.remove(Status::GRPC_MESSAGE);
    headers.remove(Status::GRPC_STATUS_DETAILS);
    if let Err(failed) = status.add_header(headers) {
        tracing::error!(%failed, "could not rewrite a grpc status");
    }
    response.extensions_mut().insert(status);
    response
}

/// The [`CollectorError`] behind a tonic codec status, or `None` to leave the response alone.
fn codec_error(headers: &http::HeaderMap, limit: usize) -> Option<CollectorError> {
    // tonic puts no details on codec errors; a details header means the status is ours.
    if headers.contains_key(Status::GRPC_STATUS_DETAILS) {
        return None;
    }
    let status = Status::from_header_map(headers)?;
    let message = status.message();
    match status.code() {
        // tonic: "Error, decoded message length too large: found N bytes, the limit is: M bytes"
        Code::OutOfRange if message.contains("message length too large") => {
            Some(CollectorError::TooLarge { limit })
        }
        // tonic: "Error decompressing: size limit, of M bytes, exceeded while decompressing message"
        Code::ResourceExhausted if message.contains("exceeded while decompressing") => {
            Some(CollectorError::TooLarge { limit })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SinkError;
    use crate::test_support::*;
    use flowscope_base::memory::MemoryBudget;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use std::time::Duration;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tonic::transport::Channel;
    use tonic::transport::server::TcpIncoming;

    const MIB: usize = 1024 * 1024;

    /// A server on 127.0.0.1:0 and a client connected to it.
    struct Running {
        client: TraceServiceClient<Channel>,
        stop: oneshot::Sender<()>,
        server: JoinHandle<Result<(), CollectorError>>,
        channel: Channel,
    }

    impl Running {
        async fn start(sink: Arc<TestSink>, limit: usize) -> Running {
            let config = CollectorConfig {
                max_request_bytes: limit,
                ..CollectorConfig::default()
            };
            Self::start_with(sink, config).await
        }

        async fn start_with(sink: Arc<TestSink>, config: CollectorConfig) -> Running {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let address = listener.local_addr().expect("address");
            let (stop, stopped) = oneshot::channel::<()>();
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let server = tokio::spawn(serve_grpc(incoming, sink, config, None, async {
                let _ = stopped.await;
            }));
            let channel = Channel::from_shared(format!("http://{address}"))
                .expect("uri")
                .connect()
                .await
                .expect("connect");
            let client = TraceServiceClient::new(channel.clone())
                .max_encoding_message_size(64 * MIB)
                .accept_compressed(CompressionEncoding::Gzip);
            Running {
                client,
                stop,
                server,
                channel,
            }
        }

        async fn export(
            &self,
            request: ExportTraceServiceRequest,
        ) -> Result<ExportTraceServiceResponse, Status> {
            self.client
                .clone()
                .export(request)
                .await
                .map(Response::into_inner)
        }

        /// An export with these metadata entries (name, value).
        async fn export_with(
            &self,
            metadata: &[(&'static str, &str)],
            request: ExportTraceServiceRequest,
        ) -> Result<ExportTraceServiceResponse, Status> {
            let mut request = Request::new(request);
            for (name, value) in metadata {
                // Appended, so a name given twice is sent twice.
                request
                    .metadata_mut()
                    .append(*name, value.parse().expect("metadata value"));
            }
            self.client
                .clone()
                .export(request)
                .await
                .map(Response::into_inner)
        }

        async fn export_gzip(
            &self,
            request: ExportTraceServiceRequest,
        ) -> Result<ExportTraceServiceResponse, Status> {
            self.client
                .clone()
                .send_compressed(CompressionEncoding::Gzip)
                .export(request)
                .await
                .map(Response::into_inner)
        }

        async fn stop(self) {
            drop(self.client);
            drop(self.channel);
            let _ = self.stop.send(());
            let served = self.server.await.expect("server task");
            assert!(served.is_ok(), "{served:?}");
        }
    }

    /// A request whose encoding is about `bytes` long, in one attribute of one valid span.
    fn request_of_size(bytes: usize) -> ExportTraceServiceRequest {
        let mut span = valid_span(1);
        span.attributes = vec![key_value("payload", &"x".repeat(bytes))];
        request_with(vec![span])
    }

    #[tokio::test]
    async fn export_stores_spans_and_leaves_partial_success_unset() {
        let sink = Arc::new(TestSink::accepting());
        let server = Running::start(sink.clone(), MIB).await;
        let spans = (1..=100).map(valid_span).collect();
        let response = server.export(request_with(spans)).await.expect("export");
        assert_eq!(response.partial_success, None);
        assert_eq!(sink.rows(), 100);
        let response = server
            .export(ExportTraceServiceRequest::default())
            .await
            .expect("empty");
        assert_eq!(response.partial_success, None);
        server.stop().await;
    }

    #[tokio::test]
    async fn export_reports_partial_success() {
        let sink = Arc::new(TestSink::accepting());
        let server = Running::start(sink.clone(), MIB).await;
        let mut bad = valid_span(2);
        bad.end_time_unix_nano = 0;
        let response = server
            .export(request_with(vec![valid_span(1), bad]))
            .await
            .expect("export");
        let partial = response.partial_success.expect("partial success");
        assert_eq!(partial.rejected_spans, 1);
        assert_eq!(
            partial.error_message,
            "rejected 1 of 2 spans: 1 with end_time before start_time"
        );
        assert_eq!(sink.rows(), 1);
        server.stop().await;
    }

    #[tokio::test]
    async fn gzip_requests_are_accepted() {
        let sink = Arc::new(TestSink::accepting());
        let server = Running::start(sink.clone(), MIB).await;
        let response = server
            .export_gzip(request_of_size(100 * 1024))
            .await
            .expect("export");
        assert_eq!(response.partial_success, None);
        assert_eq!(sink.rows(), 1);
        server.stop().await;
    }

    #[tokio::test]
    async fn over_size_requests_are_resource_exhausted_not_out_of_range() {
        let sink = Arc::new(TestSink::accepting());
        let server = Running::start(sink.clone(), MIB).await;
        for (name, compressed) in [("plain", false), ("gzip", true)] {
            let request = request_of_size(2 * MIB);
            let result = if compressed {
                server.export_gzip(request).await
            } else {
                server.export(request).await
            };
            let status = result.expect_err(name);
            assert_eq!(status.code(), Code::ResourceExhausted, "{name}: {status:?}");
            assert_eq!(
                status.message(),
                "request is larger than the 1048576-byte limit after decompression: send smaller batches",
                "{name}"
            );
            assert!(
                status.get_details_retry_info().is_none(),
                "{name}: non-retryable"
            );
        }
        assert_eq!(sink.rows(), 0);
        // A request just under the limit still goes through.
        server
            .export(request_of_size(MIB - 1024))
            .await
            .expect("under the limit");
        server.stop().await;
    }

    #[tokio::test]
    async fn undecodable_requests_are_invalid_argument() {
        /// Field 1 of ExportTraceServiceRequest is `resource_spans`; these bytes are not one.
        #[derive(Clone, PartialEq, prost::Message)]
        struct NotARequest {
            #[prost(bytes = "vec", tag = "1")]
            resource_spans: Vec<u8>,
        }
        let sink = Arc::new(TestSink::accepting());
        let server = Running::start(sink.clone(), MIB).await;
        let mut grpc = tonic::client::Grpc::new(server.channel.clone());
        grpc.ready().await.expect("ready");
        let path = http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        );
        let result: Result<Response<ExportTraceServiceResponse>, Status> = grpc
            .unary(
                Request::new(NotARequest {
                    resource_spans: vec![0xff, 0xff, 0xff],
                }),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await;
        let status = result.expect_err("garbage");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(
                "request body is not a valid OTLP ExportTraceServiceRequest protobuf: "
            ),
            "{status:?}"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn sink_errors_map_to_unavailable_with_retry_info_or_internal() {
        let cases: [(Outcome, Code, Option<Duration>); 3] = [
            (
                || {
                    Err(SinkError::Overloaded {
                        retry_after: Duration::from_millis(1_500),
                    })
                },
                Code::Unavailable,
                Some(Duration::from_millis(1_500)),
            ),
            (
                || Err(SinkError::Unavailable("shutting down".into())),
                Code::Unavailable,
                Some(Duration::from_secs(5)),
            ),
            (
                || Err(SinkError::Internal("wal corrupt".into())),
                Code::Internal,
                None,
            ),
        ];
        for (outcome, code, retry_delay) in cases {
            let server = Running::start(Arc::new(TestSink::answering(outcome)), MIB).await;
            let status = server
                .export(request_with(vec![valid_span(1)]))
                .await
                .expect_err("sink refused");
            assert_eq!(status.code(), code, "{status:?}");
            let retry_info = status.get_details_retry_info();
            assert_eq!(retry_info.and_then(|info| info.retry_delay), retry_delay);
            server.stop().await;
        }
    }

    #[tokio::test]
    async fn tokens_in_metadata_decide_the_tenant_and_refuse_everyone_else() {
        let sink = Arc::new(TestSink::accepting());
        let server = Running::start_with(sink.clone(), config_with_tokens()).await;
        let request = || request_with(vec![valid_span(1)]);
        let acme = format!("Bearer {ACME_INGEST}");
        server
            .export_with(&[("authorization", &acme)], request())
            .await
            .expect("acme's token is accepted");
        server
            .export_with(
                &[("authorization", &acme), ("x-scope-orgid", "acme")],
                request(),
            )
            .await
            .expect("a header naming the token's own tenant is accepted");
        assert_eq!(*sink.tenants.lock().unwrap(), ["acme", "acme"]);

        for metadata in [
            vec![],
            vec![("authorization", "Bearer not-a-configured-token")],
            vec![("authorization", ACME_INGEST)],
        ] {
            let status = server
                .export_with(&metadata, request())
                .await
                .expect_err("refused");
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{metadata:?}: {status:?}"
            );
            assert!(!status.message().contains("acme"));
        }
        let crossed = server
            .export_with(
                &[("authorization", &acme), ("x-scope-orgid", "globex")],
                request(),
            )
            .await
            .expect_err("another tenant's header");
        assert_eq!(crossed.code(), Code::PermissionDenied);
        for tenants in [vec!["acme", "acme"], vec!["acme,globex"]] {
            let mut metadata = vec![("authorization", acme.as_str())];
            metadata.extend(tenants.iter().map(|t| ("x-scope-orgid", *t)));
            let several = server
                .export_with(&metadata, request())
                .await
                .expect_err("several tenant values");
            assert_eq!(several.code(), Code::PermissionDenied, "{tenants:?}");
            assert!(several.message().contains("more than once"), "{several:?}");
        }
        let reader = format!("Bearer {ACME_READ}");
        let read_only = server
            .export_with(&[("authorization", &reader)], request())
            .await
            .expect_err("a read token");
        assert_eq!(read_only.code(), Code::PermissionDenied);
        assert_eq!(sink.rows(), 2);
        server.stop().await;
    }

    #[tokio::test]
    async fn a_tenant_over_its_rate_gets_resource_exhausted_with_retry_info() {
        let sink = Arc::new(TestSink::accepting());
        let server = Running::start_with(sink.clone(), config_with_tokens()).await;
        let globex = format!("Bearer {GLOBEX_INGEST}");
        let eight = || request_with((1..=8).map(valid_span).collect());
        for _ in 0..2 {
            server
                .export_with(&[("authorization", &globex)], eight())
                .await
                .expect("within the burst");
        }
        let status = server
            .export_with(&[("authorization", &globex)], eight())
            .await
            .expect_err("over the rate");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let delay = status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
            .expect("RetryInfo: the client must retry");
        assert!(
            delay > Duration::ZERO && delay <= Duration::from_secs(2),
            "{delay:?}"
        );
        assert_eq!(sink.rows(), 16);
        server.stop().await;
    }

    #[tokio::test]
    async fn a_request_over_the_memory_budget_is_unavailable_with_retry_info_after_auth() {
        let sink = Arc::new(TestSink::accepting());
        let memory = Arc::new(MemoryBudget::new(1 << 20, 4096, 0));
        let config = CollectorConfig {
            memory: memory.clone(),
            ..config_with_tokens()
        };
        let server = Running::start_with(sink.clone(), config).await;
        let acme = format!("Bearer {ACME_INGEST}");
        let small = request_with(vec![valid_span(1)]);
        server
            .export_with(&[("authorization", &acme)], small)
            .await
            .expect("fits in the budget");
        // Over 10 KB of protobuf: more than the 4 KiB budget.
        let large = request_with((1..=200).map(valid_span).collect());
        assert!(prost::Message::encoded_len(&large) > 4096);
        let status = server
            .export_with(&[("authorization", &acme)], large.clone())
            .await
            .expect_err("over the budget");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay)
                .is_some(),
            "RetryInfo: the client must retry"
        );
        // Authentication still comes first: a bad token is told so, not "retry later".
        let status = server
            .export_with(&[("authorization", "Bearer wrong-token-0000000")], large)
            .await
            .expect_err("bad token");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(
            sink.rows(),
            1,
            "nothing of the refused request reached the sink"
        );
        let figures = memory.figures();
        assert_eq!(
            figures.in_flight_bytes, 0,
            "every reservation was given back"
        );
        assert!(figures.refused_in_flight >= 1);
        server.stop().await;
    }

    #[tokio::test]
    async fn above_the_rss_high_water_mark_a_second_concurrent_request_is_refused() {
        let memory = Arc::new(MemoryBudget::new(1 << 30, 1 << 30, 1000));
        memory.record_rss(2000);
        let held = memory.admit().expect("nothing in flight: let in");
        let config = CollectorConfig {
            memory: memory.clone(),
            ..CollectorConfig::default()
        };
        let server = Running::start_with(Arc::new(TestSink::accepting()), config).await;
        let status = server
            .export(request_with(vec![valid_span(1)]))
            .await
            .expect_err("another request is in flight");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        drop(held);
        server
            .export(request_with(vec![valid_span(1)]))
            .await
            .expect("alone: let in");
        server.stop().await;
    }
}

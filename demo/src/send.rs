//! The load client behind `flowscope loadgen` and `flowscope-bench`: N connections over
//! OTLP/gRPC or OTLP/HTTP (protobuf or JSON, gzip optional), each sending one request at a
//! time and timing its acknowledgement, retrying "come back later" refusals, paced to a rate
//! or flat out, for a duration or until the source runs dry.
//!
//! ```text
//!  Source (pre-encoded Vec | generator thread ──bounded channel──>) ──> N connection tasks ──> server
//!                                              progress callback <── shared counters
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::Code;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::Error;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Refusals of one request after which it counts as failed rather than refused.
const MAX_ATTEMPTS: u32 = 200;
/// How long after the end of a timed run refused requests are still retried.
const RETRY_GRACE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type HttpClient = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "grpc" => Ok(Self::Grpc),
            "http" => Ok(Self::Http),
            other => Err(format!("protocol `{other}` is not grpc or http")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl FromStr for Encoding {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "protobuf" => Ok(Self::Protobuf),
            "json" => Ok(Self::Json),
            other => Err(format!("encoding `{other}` is not protobuf or json")),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Protobuf => "protobuf",
            Self::Json => "json",
        })
    }
}

/// Where and how requests go.
#[derive(Debug, Clone)]
pub struct Target {
    pub protocol: Protocol,
    /// `http://host:4317` for gRPC; `http://host:4318` (or the full `.../v1/traces`) for HTTP.
    pub endpoint: String,
    pub encoding: Encoding,
    pub gzip: bool,
    /// Sent as `authorization: Bearer <token>` (a server with tokens refuses requests
    /// without one).
    pub token: Option<String>,
}

impl Target {
    /// Protobuf, uncompressed.
    pub fn new(protocol: Protocol, endpoint: impl Into<String>) -> Self {
        Self {
            protocol,
            endpoint: endpoint.into(),
            encoding: Encoding::Protobuf,
            gzip: false,
            token: None,
        }
    }

    /// Refuses what OTLP does not define: JSON exists only over HTTP.
    pub fn check(&self) -> Result<(), Error> {
        if self.protocol == Protocol::Grpc && self.encoding == Encoding::Json {
            return Err(Error::BadTarget(
                "OTLP/gRPC carries protobuf only; use --protocol http for --encoding json".into(),
            ));
        }
        Ok(())
    }

    /// Encodes a request for this target. Over HTTP with gzip the body is compressed here (on
    /// the caller's thread); over gRPC the channel compresses each message.
    pub fn encode(&self, request: &ExportTraceServiceRequest) -> Result<Encoded, Error> {
        let spans = span_count(request);
        let body = match self.encoding {
            Encoding::Protobuf => request.encode_to_vec(),
            Encoding::Json => serde_json::to_vec(request)
                .map_err(|error| Error::Internal(format!("cannot encode OTLP/JSON: {error}")))?,
        };
        let body = if self.gzip && self.protocol == Protocol::Http {
            use std::io::Write as _;
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder
                .write_all(&body)
                .and_then(|()| encoder.finish())
                .map_err(|error| Error::Internal(format!("cannot gzip a request: {error}")))?
        } else {
            body
        };
        Ok(Encoded {
            body: Bytes::from(body),
            spans,
        })
    }

    fn http_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        }
    }

    fn content_type(&self) -> &'static str {
        match self.encoding {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// One encoded export request and the number of spans in it.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub body: Bytes,
    pub spans: u64,
}

/// Where the requests come from.
#[derive(Debug)]
pub enum Source {
    /// Encoded before the clock starts: sending costs the client almost nothing.
    Ready {
        requests: Vec<Encoded>,
        next: AtomicUsize,
    },
    /// Encoded while sending, by a producer on another thread.
    Generated(tokio::sync::Mutex<mpsc::Receiver<Encoded>>),
}

impl Source {
    pub fn ready(requests: Vec<Encoded>) -> Self {
        Self::Ready {
            requests,
            next: AtomicUsize::new(0),
        }
    }

    pub fn generated(receiver: mpsc::Receiver<Encoded>) -> Self {
        Self::Generated(tokio::sync::Mutex::new(receiver))
    }

    async fn next(&self) -> Option<Encoded> {
        match self {
            Self::Ready { requests, next } => {
                requests.get(next.fetch_add(1, Ordering::Relaxed)).cloned()
            }
            Self::Generated(receiver) => receiver.lock().await.recv().await,
        }
    }
}

/// How hard and how long to send.
#[derive(Debug, Clone)]
pub struct Load {
    /// Concurrent connections, each with one request in flight.
    pub connections: usize,
    /// Spans per second to pace to; `None` sends flat out.
    pub spans_per_second: Option<f64>,
    /// Stop taking new requests after this long; `None` sends until the source is empty.
    pub duration: Option<Duration>,
    /// Set to stop early (Ctrl-C): no new requests, no more retries.
    pub stop: Arc<AtomicBool>,
    /// How often the progress callback runs.
    pub progress_every: Duration,
}

impl Load {
    /// Flat out, until the source is empty, progress every two seconds.
    pub fn new(connections: usize) -> Self {
        Self {
            connections,
            spans_per_second: None,
            duration: None,
            stop: Arc::new(AtomicBool::new(false)),
            progress_every: Duration::from_secs(2),
        }
    }
}

/// The counters as the progress callback sees them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub elapsed: Duration,
    pub requests_sent: u64,
    pub requests_acked: u64,
    /// Requests refused as retryable (gRPC UNAVAILABLE, HTTP 429/502/503/504) at least once.
    pub requests_refused: u64,
    /// Attempts after the first, all requests together.
    pub retries: u64,
    /// Requests the server answered with a permanent error (bad request, too large...).
    pub requests_rejected: u64,
    /// Requests that got no answer (connection errors) or were refused until we gave up.
    pub requests_failed: u64,
    pub spans_sent: u64,
    pub spans_acked: u64,
    /// Spans of rejected requests and spans a partial success reported as rejected.
    pub spans_rejected: u64,
    pub spans_failed: u64,
}

/// What a send phase achieved.
#[derive(Debug)]
pub struct Sent {
    /// From the first request to the last answer.
    pub wall: Duration,
    pub totals: Totals,
    pub first_failure: Option<String>,
    /// Time from sending to acknowledgement of each request's successful attempt, ascending.
    pub latencies: Vec<Duration>,
}

/// Sends what `source` yields to `target` as `load` says, calling `progress` with the running
/// totals every `load.progress_every`, and waits for the last answer.
pub async fn send_all(
    target: &Target,
    source: Source,
    load: &Load,
    progress: impl FnMut(&Totals) + Send + 'static,
) -> Result<Sent, Error> {
    target.check()?;
    let mut clients = Vec::with_capacity(load.connections.max(1));
    for _ in 0..load.connections.max(1) {
        clients.push(Client::connect(target).await?);
    }
    let shared = Arc::new(Shared {
        source,
        counters: Counters::default(),
        started: Instant::now(),
        scheduled_spans: AtomicU64::new(0),
        load: load.clone(),
    });
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(connection(client, shared.clone())))
        .collect();
    let reporter = tokio::spawn(report_progress(shared.clone(), progress));
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(
            task.await
                .map_err(|_| Error::Internal("a connection task panicked".into()))?,
        );
    }
    let wall = shared.started.elapsed();
    reporter.abort();
    // Wait for the abort, so that the source (a generator's receiver) is dropped when this
    // returns and the generator sees the end of the run.
    let _ = reporter.await;
    latencies.sort_unstable();
    let first_failure = shared
        .counters
        .first_failure
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Sent {
        wall,
        totals: shared.counters.totals(wall),
        first_failure,
        latencies,
    })
}

/// The nearest-rank percentile `p` (0 to 100) of `sorted`, which must be in ascending order.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

struct Shared {
    source: Source,
    counters: Counters,
    started: Instant,
    /// Spans taken from the source so far: the pacing clock.
    scheduled_spans: AtomicU64,
    load: Load,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.load.stop.load(Ordering::Relaxed)
    }

    /// The next request and when to send it, or `None` when the run is over.
    async fn next(&self) -> Option<(Encoded, Instant)> {
        if self.stopping()
            || self
                .load
                .duration
                .is_some_and(|d| self.started.elapsed() >= d)
        {
            return None;
        }
        let request = self.source.next().await?;
        let Some(rate) = self.load.spans_per_second.filter(|r| *r > 0.0) else {
            return Some((request, Instant::now()));
        };
        let before = self
            .scheduled_spans
            .fetch_add(request.spans, Ordering::Relaxed);
        let due = Duration::from_secs_f64(before as f64 / rate);
        if self.load.duration.is_some_and(|d| due >= d) {
            return None;
        }
        Some((request, self.started + due))
    }

    /// After this, a refused request counts as failed: the run is over.
    fn give_up_retrying(&self) -> bool {
        self.stopping()
            || self
                .load
                .duration
                .is_some_and(|d| self.started.elapsed() >= d + RETRY_GRACE)
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests_sent: AtomicU64,
    requests_acked: AtomicU64,
    requests_refused: AtomicU64,
    retries: AtomicU64,
    requests_rejected: AtomicU64,
    requests_failed: AtomicU64,
    spans_sent: AtomicU64,
    spans_acked: AtomicU64,
    spans_rejected: AtomicU64,
    spans_failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl Counters {
    fn note(&self, message: String) {
        let mut first = self
            .first_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        first.get_or_insert(message);
    }

    fn totals(&self, elapsed: Duration) -> Totals {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Totals {
            elapsed,
            requests_sent: read(&self.requests_sent),
            requests_acked: read(&self.requests_acked),
            requests_refused: read(&self.requests_refused),
            retries: read(&self.retries),
            requests_rejected: read(&self.requests_rejected),
            requests_failed: read(&self.requests_failed),
            spans_sent: read(&self.spans_sent),
            spans_acked: read(&self.spans_acked),
            spans_rejected: read(&self.spans_rejected),
            spans_failed: read(&self.spans_failed),
        }
    }
}

fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

/// One connection: takes the next request, waits for its time, sends it, waits for its
/// answer, retries it while refused, repeats.
async fn connection(mut client: Client, shared: Arc<Shared>) -> Vec<Duration> {
    let counters = &shared.counters;
    let mut latencies = Vec::new();
    while let Some((request, due)) = shared.next().await {
        tokio::time::sleep_until(due.into()).await;
        add(&counters.requests_sent, 1);
        add(&counters.spans_sent, request.spans);
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            if attempt > 1 {
                add(&counters.retries, 1);
            }
            let sent = Instant::now();
            match client.export(request.body.clone()).await {
                Outcome::Acked { rejected_spans } => {
                    latencies.push(sent.elapsed());
                    let rejected = rejected_spans.min(request.spans);
                    add(&counters.requests_acked, 1);
                    add(&counters.spans_acked, request.spans - rejected);
                    add(&counters.spans_rejected, rejected);
                    break;
                }
                Outcome::Refused if attempt < MAX_ATTEMPTS && !shared.give_up_retrying() => {
                    if attempt == 1 {
                        add(&counters.requests_refused, 1);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Outcome::Refused => {
                    add(&counters.requests_failed, 1);
                    add(&counters.spans_failed, request.spans);
                    counters.note(format!(
                        "still refused (retryable) after {attempt} attempts; gave up"
                    ));
                    break;
                }
                Outcome::Rejected(message) => {
                    add(&counters.requests_rejected, 1);
                    add(&counters.spans_rejected, request.spans);
                    counters.note(message);
                    break;
                }
                Outcome::Failed(message) => {
                    add(&counters.requests_failed, 1);
                    add(&counters.spans_failed, request.spans);
                    counters.note(message);
                    // A connection that fails at once would otherwise spin through the source.
                    tokio::time::sleep(FIRST_BACKOFF).await;
                    break;
                }
            }
        }
    }
    latencies
}

async fn report_progress(shared: Arc<Shared>, mut progress: impl FnMut(&Totals)) {
    let mut ticker = tokio::time::interval(shared.load.progress_every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        progress(&shared.counters.totals(shared.started.elapsed()));
    }
}

enum Outcome {
    Acked {
        rejected_spans: u64,
    },
    /// The server said "retry later".
    Refused,
    /// The server said "never send this again".
    Rejected(String),
    /// No answer.
    Failed(String),
}

/// One connection to the server, over either protocol.
enum Client {
    /// A `Channel` of its own is one HTTP/2 connection.
    Grpc {
        grpc: tonic::client::Grpc<Channel>,
        authorization: Option<tonic::metadata::AsciiMetadataValue>,
    },
    /// A client of its own keeps its one connection alive between requests.
    Http {
        client: HttpClient,
        url: String,
        authorization: Option<hyper::header::HeaderValue>,
        content_type: &'static str,
        gzip: bool,
        json: bool,
    },
}

impl Client {
    async fn connect(target: &Target) -> Result<Self, Error> {
        let unreachable = |reason: String| Error::Unreachable {
            endpoint: target.endpoint.clone(),
            reason,
        };
        match target.protocol {
            Protocol::Grpc => {
                let endpoint = Channel::from_shared(target.endpoint.clone()).map_err(|error| {
                    Error::BadTarget(format!(
                        "endpoint `{}` is not a valid url: {error}",
                        target.endpoint
                    ))
                })?;
                let channel = endpoint
                    .connect_timeout(CONNECT_TIMEOUT)
                    .connect()
                    .await
                    .map_err(|error| unreachable(source_chain(&error)))?;
                let mut grpc = tonic::client::Grpc::new(channel);
                if target.gzip {
                    grpc = grpc
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                let authorization = match &target.token {
                    None => None,
                    Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
                        Error::BadTarget("the token must be printable ASCII".into())
                    })?),
                };
                Ok(Self::Grpc {
                    grpc,
                    authorization,
                })
            }
            Protocol::Http => {
                let url = target.http_url();
                let uri: hyper::Uri = url.parse().map_err(|error| {
                    Error::BadTarget(format!(
                        "endpoint `{}` is not a valid url: {error}",
                        target.endpoint
                    ))
                })?;
                if uri.scheme_str() != Some("http") {
                    return Err(Error::BadTarget(format!(
                        "endpoint `{}` must start with http:// (TLS is not supported)",
                        target.endpoint
                    )));
                }
                let host = uri.host().unwrap_or("127.0.0.1").to_string();
                let port = uri.port_u16().unwrap_or(80);
                // The HTTP client connects lazily; find out now whether anyone listens.
                match tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio::net::TcpStream::connect((host.as_str(), port)),
                )
                .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Err(unreachable(error.to_string())),
                    Err(_) => {
                        return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")));
                    }
                }
                let authorization = match &target.token {
                    None => None,
                    Some(token) => Some(
                        hyper::header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(
                            |_| Error::BadTarget("the token must be printable ASCII".into()),
                        )?,
                    ),
                };
                Ok(Self::Http {
                    client: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                        .build_http(),
                    url,
                    authorization,
                    content_type: target.content_type(),
                    gzip: target.gzip,
                    json: target.encoding == Encoding::Json,
                })
            }
        }
    }

    async fn export(&mut self, body: Bytes) -> Outcome {
        match self {
            Self::Grpc {
                grpc,
                authorization,
            } => {
                if let Err(error) = grpc.ready().await {
                    return Outcome::Failed(format!("the grpc connection failed: {error}"));
                }
                let path = PathAndQuery::from_static(EXPORT_PATH);
                let mut request = tonic::Request::new(body);
                if let Some(value) = authorization {
                    request
                        .metadata_mut()
                        .insert("authorization", value.clone());
                }
                match grpc.unary(request, path, RawCodec).await {
                    Ok(response) => acknowledged_protobuf(response.into_inner()),
                    Err(status) => grpc_outcome(&status),
                }
            }
            Self::Http {
                client,
                url,
                authorization,
                content_type,
                gzip,
                json,
            } => {
                let mut request = hyper::Request::post(url.as_str())
                    .header(hyper::header::CONTENT_TYPE, *content_type);
                if *gzip {
                    request = request.header(hyper::header::CONTENT_ENCODING, "gzip");
                }
                if let Some(value) = authorization {
                    request = request.header(hyper::header::AUTHORIZATION, value.clone());
                }
                let request = match request.body(Full::new(body)) {
                    Ok(request) => request,
                    Err(error) => {
                        return Outcome::Failed(format!("cannot build a request: {error}"));
                    }
                };
                // Read the whole answer, refusals included, so the connection stays reusable.
                let response = match client.request(request).await {
                    Ok(response) => response,
                    Err(error) => {
                        return Outcome::Failed(format!(
                            "POST {url} failed: {}",
                            source_chain(&error)
                        ));
                    }
                };
                let status = response.status();
                let answer = match response.into_body().collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(error) => {
                        return Outcome::Failed(format!("reading the answer failed: {error}"));
                    }
                };
                match status.as_u16() {
                    200 if *json => acknowledged_json(&answer),
                    200 => acknowledged_protobuf(answer),
                    429 | 502 | 503 | 504 => Outcome::Refused,
                    _ => Outcome::Rejected(format!(
                        "POST {url} answered {status}: {}",
                        String::from_utf8_lossy(&answer[..answer.len().min(300)])
                    )),
                }
            }
        }
    }
}

/// OTLP's retryable gRPC codes; RESOURCE_EXHAUSTED is retryable only with a retry hint, which
/// flowscope sends with UNAVAILABLE instead.
fn grpc_outcome(status: &tonic::Status) -> Outcome {
    match status.code() {
        Code::Unavailable
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => Outcome::Refused,
        // Retryable only with RetryInfo (a rate limit); without it the request is too large.
        Code::ResourceExhausted if !status.details().is_empty() => Outcome::Refused,
        code => Outcome::Rejected(format!(
            "grpc export rejected with {code:?}: {}",
            status.message()
        )),
    }
}

fn acknowledged_protobuf(body: Bytes) -> Outcome {
    match ExportTraceServiceResponse::decode(body) {
        Ok(response) => Outcome::Acked {
            rejected_spans: response.partial_success.map_or(0, |partial| {
                u64::try_from(partial.rejected_spans).unwrap_or(0)
            }),
        },
        Err(error) => Outcome::Failed(format!("the export answer is not protobuf: {error}")),
    }
}

/// OTLP/JSON writes `rejectedSpans` as a string (a 64-bit integer); accept a number too.
fn acknowledged_json(body: &[u8]) -> Outcome {
    let answer: serde_json::Value = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(error) => {
            return Outcome::Failed(format!("the export answer is not JSON: {error}"));
        }
    };
    let rejected = &answer["partialSuccess"]["rejectedSpans"];
    Outcome::Acked {
        rejected_spans: rejected
            .as_u64()
            .or_else(|| rejected.as_str().and_then(|text| text.parse().ok()))
            .unwrap_or(0),
    }
}

/// An error and its causes, `: `-separated: hyper and tonic hide the useful part
/// ("connection refused") in the source chain.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Sends already-encoded protobuf bytes as the gRPC message, and hands back the answer's bytes,
/// so the client does not pay for encoding while the clock runs.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The spans in an export request.
pub fn span_count(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum()
}

/// `1234567` as `1,234,567`.
pub fn thousands(number: u64) -> String {
    let digits = number.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let check = |values: &[u64], p: f64, expected: Option<u64>| {
            assert_eq!(
                percentile(&ms(values), p),
                expected.map(Duration::from_millis),
                "p{p} of {values:?}"
            );
        };
        check(&[], 50.0, None);
        check(&[7], 0.0, Some(7));
        check(&[7], 99.0, Some(7));
        check(&[1, 2, 3, 4, 5], 50.0, Some(3));
        check(&[1, 2, 3, 4], 50.0, Some(2));
        check(&[1, 2, 3, 4], 100.0, Some(4));
        check(&[1, 2, 3, 4], 0.0, Some(1));
        let hundred: Vec<u64> = (1..=100).collect();
        check(&hundred, 99.0, Some(99));
        check(&hundred, 99.5, Some(100));
        check(&hundred, 50.0, Some(50));
    }

    #[test]
    fn the_http_url_gets_the_traces_path_once() {
        let check = |endpoint: &str, expected: &str| {
            assert_eq!(Target::new(Protocol::Http, endpoint).http_url(), expected);
        };
        check("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces");
        check("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces");
        check(
            "http://collector:4318/v1/traces",
            "http://collector:4318/v1/traces",
        );
    }

    #[test]
    fn json_over_grpc_is_refused_with_what_to_do() {
        let mut target = Target::new(Protocol::Grpc, "http://127.0.0.1:4317");
        target.encoding = Encoding::Json;
        let error = target.check().expect_err("json over grpc").to_string();
        assert!(error.contains("--protocol http"), "{error}");
    }

    #[test]
    fn json_answers_count_rejected_spans_written_as_text_or_number() {
        let rejected = |body: &str| match acknowledged_json(body.as_bytes()) {
            Outcome::Acked { rejected_spans } => Some(rejected_spans),
            _ => None,
        };
        assert_eq!(rejected("{}"), Some(0));
        assert_eq!(
            rejected(r#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"x"}}"#),
            Some(3)
        );
        assert_eq!(
            rejected(r#"{"partialSuccess":{"rejectedSpans":4}}"#),
            Some(4)
        );
        assert_eq!(rejected("not json"), None);
    }

    #[test]
    fn retryable_grpc_codes_are_refusals_and_the_rest_rejections() {
        let refused = |code| {
            matches!(
                grpc_outcome(&tonic::Status::new(code, "x")),
                Outcome::Refused
            )
        };
        assert!(refused(Code::Unavailable));
        assert!(refused(Code::OutOfRange));
        assert!(!refused(Code::InvalidArgument));
        assert!(!refused(Code::ResourceExhausted));
    }
}

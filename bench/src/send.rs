//! The load client shared by both benchmarks: N connections, each sending one request at a
//! time and timing its acknowledgement, retrying "come back later" refusals.
//!
//! ```text
//!  Source (pre-encoded Vec | generator thread ──bounded channel──>) ──> N connection tasks ──> server
//!                                                          progress task <── shared counters
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::report::thousands;
use crate::server::{HttpClient, Server, http_client, memory_bytes, post};
use crate::spans::Encoded;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Refusals of one request after which it counts as failed rather than refused.
const MAX_ATTEMPTS: u32 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
}

/// Where the requests come from.
#[derive(Debug)]
pub enum Source {
    /// Encoded before the clock starts: sending costs the client almost nothing.
    Ready {
        requests: Vec<Encoded>,
        next: AtomicUsize,
    },
    /// Encoded while sending, by a producer on another thread, when they would not fit in memory.
    Generated(tokio::sync::Mutex<mpsc::Receiver<Encoded>>),
}

impl Source {
    pub fn ready(requests: Vec<Encoded>) -> Self {
        Self::Ready {
            requests,
            next: AtomicUsize::new(0),
        }
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

/// What a send phase achieved.
#[derive(Debug)]
pub struct Sent {
    pub wall: Duration,
    pub acked_spans: u64,
    /// Spans the server acknowledged but reported as rejected (OTLP partial success).
    pub rejected_spans: u64,
    /// Requests refused with UNAVAILABLE / 503 / 429 at least once, then retried.
    pub refused_requests: u64,
    pub failed_requests: u64,
    pub first_failure: Option<String>,
    /// Time from sending to acknowledgement of each request's successful attempt, ascending.
    pub latencies: Vec<Duration>,
}

/// Sends everything `source` yields over `connections` connections and waits for the acks.
pub async fn send_all(
    protocol: Protocol,
    server: &Server,
    source: Source,
    connections: usize,
    expected_spans: u64,
) -> anyhow::Result<Sent> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        clients.push(Client::connect(protocol, server).await?);
    }
    let source = Arc::new(source);
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(connection(client, source.clone(), counters.clone())))
        .collect();
    let progress = tokio::spawn(progress(
        counters.clone(),
        started,
        expected_spans,
        server.pid(),
    ));
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("a connection task panicked")?);
    }
    let wall = started.elapsed();
    progress.abort();
    latencies.sort_unstable();
    let first_failure = counters
        .first_failure
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Sent {
        wall,
        acked_spans: counters.acked_spans.load(Ordering::Relaxed),
        rejected_spans: counters.rejected_spans.load(Ordering::Relaxed),
        refused_requests: counters.refused_requests.load(Ordering::Relaxed),
        failed_requests: counters.failed_requests.load(Ordering::Relaxed),
        first_failure,
        latencies,
    })
}

#[derive(Debug, Default)]
struct Counters {
    acked_spans: AtomicU64,
    rejected_spans: AtomicU64,
    refused_requests: AtomicU64,
    failed_requests: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl Counters {
    fn fail(&self, message: String) {
        self.failed_requests.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        first.get_or_insert(message);
    }
}

/// One connection: takes the next request, sends it, waits for its ack, repeats.
async fn connection(
    mut client: Client,
    source: Arc<Source>,
    counters: Arc<Counters>,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    while let Some(request) = source.next().await {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            let sent = Instant::now();
            match client.export(request.body.clone()).await {
                Outcome::Acked { rejected_spans } => {
                    latencies.push(sent.elapsed());
                    let rejected = rejected_spans.min(request.spans);
                    counters
                        .acked_spans
                        .fetch_add(request.spans - rejected, Ordering::Relaxed);
                    counters
                        .rejected_spans
                        .fetch_add(rejected, Ordering::Relaxed);
                    break;
                }
                Outcome::Refused if attempt < MAX_ATTEMPTS => {
                    if attempt == 1 {
                        counters.refused_requests.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Outcome::Refused => {
                    counters.fail(format!("still refused after {MAX_ATTEMPTS} attempts"));
                }
                Outcome::Failed(message) => {
                    counters.fail(message);
                    break;
                }
            }
        }
    }
    latencies
}

async fn progress(counters: Arc<Counters>, started: Instant, expected_spans: u64, server: u32) {
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.tick().await;
    let (mut last_spans, mut last_time) = (0, started);
    loop {
        ticker.tick().await;
        let spans = counters.acked_spans.load(Ordering::Relaxed);
        let now = Instant::now();
        let recent = (spans - last_spans) as f64 / (now - last_time).as_secs_f64();
        let average = spans as f64 / (now - started).as_secs_f64();
        let rss = memory_bytes(server, "VmRSS").map_or(0, |bytes| bytes >> 20);
        eprintln!(
            "  {:>6.1}s  {} of {} spans acked  {}/s now  {}/s average  {} refused  {} failed  server RSS {} MiB",
            (now - started).as_secs_f64(),
            thousands(spans),
            thousands(expected_spans),
            thousands(recent as u64),
            thousands(average as u64),
            counters.refused_requests.load(Ordering::Relaxed),
            counters.failed_requests.load(Ordering::Relaxed),
            thousands(rss),
        );
        (last_spans, last_time) = (spans, now);
    }
}

enum Outcome {
    Acked {
        rejected_spans: u64,
    },
    /// The server said "retry later" (gRPC UNAVAILABLE, HTTP 503 or 429).
    Refused,
    Failed(String),
}

/// One connection to the server, over either protocol.
enum Client {
    /// A `Channel` of its own is one HTTP/2 connection.
    Grpc(tonic::client::Grpc<Channel>),
    /// A client of its own keeps its one connection alive between requests.
    Http { client: HttpClient, url: String },
}

impl Client {
    async fn connect(protocol: Protocol, server: &Server) -> anyhow::Result<Self> {
        match protocol {
            Protocol::Grpc => {
                let channel = Channel::from_shared(format!("http://{}", server.grpc))
                    .context("the OTLP/gRPC address is not a valid uri")?
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to OTLP/gRPC at {}", server.grpc))?;
                Ok(Self::Grpc(tonic::client::Grpc::new(channel)))
            }
            Protocol::Http => Ok(Self::Http {
                client: http_client(),
                url: format!("http://{}/v1/traces", server.http),
            }),
        }
    }

    async fn export(&mut self, body: Bytes) -> Outcome {
        match self {
            Self::Grpc(grpc) => {
                if let Err(error) = grpc.ready().await {
                    return Outcome::Failed(format!("the grpc connection failed: {error}"));
                }
                let path = PathAndQuery::from_static(EXPORT_PATH);
                match grpc.unary(tonic::Request::new(body), path, RawCodec).await {
                    Ok(response) => acknowledged(response.into_inner()),
                    Err(status) if status.code() == Code::Unavailable => Outcome::Refused,
                    Err(status) => Outcome::Failed(format!(
                        "grpc export failed with {:?}: {}",
                        status.code(),
                        status.message()
                    )),
                }
            }
            Self::Http { client, url } => {
                // `post` reads the whole answer, refusals included, so the connection stays reusable.
                let (status, body) = match post(client, url, "application/x-protobuf", body).await {
                    Ok(answer) => answer,
                    Err(error) => {
                        return Outcome::Failed(format!("POST /v1/traces failed: {error:#}"));
                    }
                };
                match status.as_u16() {
                    200 => acknowledged(body),
                    429 | 503 => Outcome::Refused,
                    _ => Outcome::Failed(format!(
                        "POST /v1/traces answered {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    )),
                }
            }
        }
    }
}

fn acknowledged(body: Bytes) -> Outcome {
    match ExportTraceServiceResponse::decode(body) {
        Ok(response) => Outcome::Acked {
            rejected_spans: response.partial_success.map_or(0, |partial| {
                u64::try_from(partial.rejected_spans).unwrap_or(0)
            }),
        },
        Err(error) => Outcome::Failed(format!("the export answer is not protobuf: {error}")),
    }
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

//! Routing for a cluster's receivers (issue 24): an OTLP request is split by each span's
//! trace id into one request per destination, on the wire, without decoding the spans: a
//! part is the request's own resource, scope and span bytes, copied. The [`Cluster`] a
//! node runs with decides the destinations and forwards the parts (the binary's
//! `cluster` module); this crate only calls it.
//!
//! A forwarded part carries [`ROUTE_HEADER`], which names the partitions it was routed to
//! and their epochs: the ingester that gets it checks it holds them ([`Cluster::admit`])
//! and then takes the part like any request, and never routes it again.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use flowscope_auth::TenantId;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use crate::wire::{Parse, Reader};
use crate::{CollectorError, SinkError};

/// The header of a forwarded part: `partition:epoch` pairs, comma separated.
pub const ROUTE_HEADER: &str = "x-flowscope-route";

/// What a node of a cluster does with requests (set in [`crate::CollectorConfig::cluster`];
/// `None` is a standalone node, which takes every request itself).
pub trait Cluster: Send + Sync + Debug + 'static {
    /// Whether this node routes the requests clients send it (a receiver). When it does not,
    /// it takes them itself.
    fn routes(&self) -> bool;

    /// Splits `request` (protobuf, inflated) of `tenant` by trace and forwards the parts
    /// with `headers` (the client's credentials), answering once every part is durable.
    ///
    /// `local` takes, in process, the parts of partitions this node holds itself (a node
    /// that is both receiver and ingester): no loopback call for them.
    fn route(
        &self,
        tenant: &TenantId,
        headers: Vec<(HeaderName, HeaderValue)>,
        request: Bytes,
        local: Arc<dyn TakePart>,
    ) -> BoxFuture<'static, Result<Routed, CollectorError>>;

    /// Checks a forwarded part's [`ROUTE_HEADER`] value before it is taken: Err when this
    /// node is not an ingester or does not hold those partitions at those epochs.
    fn admit(&self, route: &str) -> Result<(), CollectorError>;

    /// The forwarded parts this ingester has made durable (`crate::dedup`): a part sent
    /// again is taken only for the partitions it has not stored.
    fn part_ids(&self) -> &crate::dedup::PartIds;

    /// The partition of `tenant`'s spans of trace `trace_id` (below 64).
    fn partition_of(&self, tenant: &TenantId, trace_id: &[u8]) -> u32;
}

/// An ingester's way with a part routed to it, called in process by a node that routes
/// to itself: what the gRPC call to its own receiver would do (the route checked with
/// [`Cluster::admit`], the partitions already stored dropped, the rest decoded, rated,
/// written and counted), without the loopback call. Errors are mapped as
/// [`Forwarder::forward`] maps the answers of a remote ingester.
pub trait TakePart: Send + Sync + 'static {
    /// Takes `part` (an `ExportTraceServiceRequest`'s bytes, followed by `mark`) as if it
    /// had come with the client's `headers` and the [`ROUTE_HEADER`] `route`; `who` names
    /// this node in errors.
    fn take(
        &self,
        who: &str,
        headers: &[(HeaderName, HeaderValue)],
        route: String,
        part: Bytes,
        mark: Bytes,
    ) -> BoxFuture<'static, Result<Routed, CollectorError>>;
}

/// What the ingesters answered for a routed request: the spans they refused (partial
/// success) and why.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Routed {
    pub rejected_spans: i64,
    pub messages: Vec<String>,
}

impl Routed {
    /// Adds another part's answer.
    pub fn add(&mut self, other: Routed) {
        self.rejected_spans += other.rejected_spans;
        self.messages.extend(other.messages);
    }

    /// An ingester's answer to a part: its partial success, if any.
    pub(crate) fn of_response(response: ExportTraceServiceResponse) -> Self {
        let mut routed = Routed::default();
        if let Some(partial) = response.partial_success {
            routed.rejected_spans = partial.rejected_spans;
            if !partial.error_message.is_empty() {
                routed.messages.push(partial.error_message);
            }
        }
        routed
    }

    pub(crate) fn response(self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (self.rejected_spans > 0 || !self.messages.is_empty()).then(|| {
                ExportTracePartialSuccess {
                    rejected_spans: self.rejected_spans,
                    error_message: self.messages.join("; "),
                }
            }),
        }
    }
}

/// The gRPC method a part is forwarded to: the ingester's own OTLP receiver.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends parts to ingesters over OTLP/gRPC, one channel per ingester address, kept.
#[derive(Debug)]
pub struct Forwarder {
    timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    /// A forwarder whose calls give up after `timeout` (the ingester's WAL sync included).
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            channels: Mutex::default(),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, CollectorError> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|error| CollectorError::Internal(format!("ingester address {addr}: {error}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(self.timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Sends `request` (an `ExportTraceServiceRequest`'s bytes, followed by `suffix`: more
    /// fields of it, the part's mark) to the ingester at `addr` with
    /// the client's `headers` and the [`ROUTE_HEADER`] `route`. An error names the ingester
    /// as `who`; anything but a malformed part or refused credentials is
    /// [`SinkError::Unavailable`], for the caller to route again or the client to retry.
    pub async fn forward(
        &self,
        who: &str,
        addr: &str,
        route: &str,
        headers: &[(HeaderName, HeaderValue)],
        request: Bytes,
        suffix: Bytes,
    ) -> Result<Routed, CollectorError> {
        self.forward_chunks(who, addr, route, headers, vec![request, suffix])
            .await
    }

    /// Sends one call whose message is `chunks` one after the other (the parts of several
    /// requests, each followed by its mark, for a [`Batcher`]); otherwise as
    /// [`Forwarder::forward`]. An ingester that would refuse some of a batch's spans answers
    /// [`CollectorError::OneByOne`].
    pub async fn forward_chunks(
        &self,
        who: &str,
        addr: &str,
        route: &str,
        headers: &[(HeaderName, HeaderValue)],
        chunks: Vec<Bytes>,
    ) -> Result<Routed, CollectorError> {
        let unavailable = |why: &str| {
            CollectorError::Sink(SinkError::Unavailable(format!(
                "ingester {who} ({addr}) did not take its part: {why}"
            )))
        };
        let mut grpc = tonic::client::Grpc::new(self.channel(addr)?);
        grpc.ready()
            .await
            .map_err(|error| unavailable(&error.to_string()))?;
        let mut call = tonic::Request::new(chunks);
        let metadata = call.metadata_mut();
        for (name, value) in headers {
            if let (Ok(key), Ok(value)) = (
                tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes()),
                tonic::metadata::MetadataValue::try_from(value.as_bytes()),
            ) {
                metadata.append(key, value);
            }
        }
        if let Ok(route) = route.parse() {
            metadata.insert(ROUTE_HEADER, route);
        }
        let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
        match grpc.unary(call, path, ForwardCodec).await {
            Ok(response) => Ok(Routed::of_response(response.into_inner())),
            Err(status) => Err(match status.code() {
                tonic::Code::InvalidArgument => {
                    CollectorError::InvalidRequest(status.message().to_string())
                }
                tonic::Code::FailedPrecondition => {
                    CollectorError::OneByOne(status.message().to_string())
                }
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    CollectorError::Internal(format!(
                        "ingester {who} refused the credentials this receiver accepted ({}): give every node the same tokens",
                        status.message()
                    ))
                }
                _ => unavailable(status.message()),
            }),
        }
    }
}

/// At most this many calls in flight from one receiver to one ingester: the parts that
/// arrive meanwhile wait, and go together in the next call (a group commit). An ingester's
/// cost per call is large against its cost per span (BENCHMARKS.md), so a receiver turns
/// many small requests into a few large calls.
const CALLS_IN_FLIGHT: usize = 1;
/// The most bytes one batched call carries: well under any ingester's request limit.
const BATCH_BYTES: usize = 4 << 20;
/// The most requests' parts one call carries.
const BATCH_PARTS: usize = 64;

/// Sends the parts of concurrent client requests bound for one ingester together, in one
/// call, each part followed by its mark (`crate::dedup::segments`), so that the ingester
/// stores each request's partitions once however they travel. A part waits only while the
/// call before it is in flight. When the ingester would refuse some spans of a batch
/// ([`CollectorError::OneByOne`]) or finds it malformed, the parts go again one by one, so
/// each request gets its own answer.
#[derive(Debug)]
pub struct Batcher {
    forwarder: Forwarder,
    queues: Mutex<HashMap<String, Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: std::collections::VecDeque<Waiting>,
    sending: usize,
}

#[derive(Debug)]
struct Waiting {
    who: String,
    route: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    part: Bytes,
    mark: Bytes,
    id: crate::dedup::RequestId,
    answer: tokio::sync::oneshot::Sender<Result<Routed, CollectorError>>,
}

impl Waiting {
    fn bytes(&self) -> usize {
        self.part.len() + self.mark.len()
    }
}

impl Batcher {
    /// A batcher whose calls give up after `timeout`.
    pub fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            forwarder: Forwarder::new(timeout),
            queues: Mutex::default(),
        })
    }

    /// Sends `part` (followed by `mark`, of client request `id`) to the ingester `who` at
    /// `addr` with the client's `headers` and the [`ROUTE_HEADER`] `route`, with the other
    /// parts waiting for the same ingester; answers as [`Forwarder::forward`].
    #[allow(clippy::too_many_arguments)]
    pub async fn forward(
        self: &Arc<Self>,
        who: &str,
        addr: &str,
        route: String,
        headers: &[(HeaderName, HeaderValue)],
        part: Bytes,
        mark: Bytes,
        id: crate::dedup::RequestId,
    ) -> Result<Routed, CollectorError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let start = {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            let queue = queues.entry(addr.to_string()).or_default();
            queue.waiting.push_back(Waiting {
                who: who.to_string(),
                route,
                headers: headers.to_vec(),
                part,
                mark,
                id,
                answer,
            });
            let start = queue.sending < CALLS_IN_FLIGHT;
            if start {
                queue.sending += 1;
            }
            start
        };
        if start {
            let (this, addr) = (self.clone(), addr.to_string());
            tokio::spawn(async move {
                loop {
                    let batch = this.take(&addr);
                    if batch.is_empty() {
                        return;
                    }
                    this.send(&addr, batch).await;
                }
            });
        }
        answered.await.unwrap_or_else(|_| {
            Err(CollectorError::Sink(SinkError::Unavailable(format!(
                "ingester {who} ({addr}): the call carrying this part was dropped"
            ))))
        })
    }

    /// The next call's parts: the first waiting, and those after it with the same
    /// credentials, of other requests, up to the limits. Empty when none wait (the sender
    /// then stops).
    fn take(&self, addr: &str) -> Vec<Waiting> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(queue) = queues.get_mut(addr) else {
            return Vec::new();
        };
        let Some(first) = queue.waiting.pop_front() else {
            queue.sending = queue.sending.saturating_sub(1);
            if queue.sending == 0 {
                queues.remove(addr);
            }
            return Vec::new();
        };
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        let mut index = 0;
        while index < queue.waiting.len() && batch.len() < BATCH_PARTS {
            let next = &queue.waiting[index];
            if next.headers == batch[0].headers
                && bytes + next.bytes() <= BATCH_BYTES
                && batch.iter().all(|taken| taken.id != next.id)
                && let Some(next) = queue.waiting.remove(index)
            {
                bytes += next.bytes();
                batch.push(next);
            } else {
                index += 1;
            }
        }
        batch
    }

    async fn send(&self, addr: &str, mut batch: Vec<Waiting>) {
        if batch.len() == 1
            && let Some(one) = batch.pop()
        {
            let answer = self
                .forwarder
                .forward(&one.who, addr, &one.route, &one.headers, one.part, one.mark)
                .await;
            let _ = one.answer.send(answer);
            return;
        }
        let mut route: Vec<&str> = batch
            .iter()
            .flat_map(|w| w.route.split(','))
            .filter(|item| !item.is_empty())
            .collect();
        route.sort_unstable();
        route.dedup();
        let route = route.join(",");
        let chunks: Vec<Bytes> = batch
            .iter()
            .flat_map(|w| [w.part.clone(), w.mark.clone()])
            .collect();
        let (who, headers) = (&batch[0].who, &batch[0].headers);
        match self
            .forwarder
            .forward_chunks(who, addr, &route, headers, chunks)
            .await
        {
            Ok(routed) => {
                // An ingester refuses no span of a batch (it answers OneByOne instead).
                let mut routed = Some(routed);
                for waiting in batch {
                    let _ = waiting.answer.send(Ok(routed.take().unwrap_or_default()));
                }
            }
            Err(CollectorError::OneByOne(_) | CollectorError::InvalidRequest(_)) => {
                let sends = batch.into_iter().map(|one| async move {
                    let answer = self
                        .forwarder
                        .forward(&one.who, addr, &one.route, &one.headers, one.part, one.mark)
                        .await;
                    let _ = one.answer.send(answer);
                });
                futures::future::join_all(sends).await;
            }
            Err(error) => {
                for waiting in batch {
                    let _ = waiting.answer.send(Err(copy_error(&error)));
                }
            }
        }
    }
}

/// The same failure for each part of a batch.
fn copy_error(error: &CollectorError) -> CollectorError {
    match error {
        CollectorError::Internal(message) => CollectorError::Internal(message.clone()),
        CollectorError::Sink(SinkError::Unavailable(message)) => {
            CollectorError::Sink(SinkError::Unavailable(message.clone()))
        }
        other => CollectorError::Sink(SinkError::Unavailable(other.to_string())),
    }
}

/// Parts go as their bytes; answers are decoded by prost.
struct ForwardCodec;

impl Codec for ForwardCodec {
    type Encode = Vec<Bytes>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = BytesEncoder;
    type Decoder = tonic_prost::ProstDecoder<ExportTraceServiceResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Vec<Bytes>;
    type Error = tonic::Status;

    /// The message is its chunks one after the other: one copy into the frame buffer, as
    /// any message takes.
    fn encode(&mut self, item: Vec<Bytes>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        for chunk in &item {
            dst.put_slice(chunk);
        }
        Ok(())
    }
}

/// The headers of a client request a receiver forwards with each part: its credentials and
/// tenant, so that the ingester authorizes the part as it would the request.
pub(crate) fn forwarded_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let tenant = HeaderName::from_static(flowscope_auth::TENANT_HEADER);
    headers
        .iter()
        .filter(|(name, _)| **name == http::header::AUTHORIZATION || **name == tenant)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// The route header's value, when the request is a forwarded part.
pub(crate) fn route_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(ROUTE_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

/// One destination's part of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// An `ExportTraceServiceRequest` with this destination's spans.
    pub request: Bytes,
    pub spans: usize,
}

/// Splits a protobuf `ExportTraceServiceRequest` by destination: `destination` maps a
/// span's trace id (empty when it has none) to an index below `destinations`. Each span's
/// resource and scope go with it. Returns one entry per destination, `None` where no span
/// goes; a request whose spans all go to one destination is that destination's part as it
/// came, without a copy.
pub fn split_request(
    request: &Bytes,
    destinations: usize,
    mut destination: impl FnMut(&[u8]) -> usize,
) -> Result<Vec<Option<Part>>, CollectorError> {
    match read_request(request, &mut destination) {
        Ok(resources) => Ok(assemble(request, &resources, destinations)),
        // Not in the shape exporters write (a message sent in pieces, groups): prost reads
        // it, or says why it is not a request, and its canonical encoding is split.
        Err(_) => {
            let decoded = ExportTraceServiceRequest::decode(request.as_ref()).map_err(|error| {
                CollectorError::InvalidRequest(format!(
                    "request body is not a valid OTLP ExportTraceServiceRequest protobuf: {error}"
                ))
            })?;
            let canonical = Bytes::from(decoded.encode_to_vec());
            let resources = read_request(&canonical, &mut destination).map_err(|_| {
                CollectorError::Internal("a request prost encoded cannot be split".into())
            })?;
            Ok(assemble(&canonical, &resources, destinations))
        }
    }
}

/// A `ResourceSpans` or `ScopeSpans` read for splitting: its fields other than field 2 as
/// they came (key and value), and what its field 2 holds.
struct Container<'a, T> {
    other: Vec<&'a [u8]>,
    contained: Vec<T>,
}

/// A span: its destination and its field as it came (key, length and message).
type Span<'a> = (usize, &'a [u8]);
type Resource<'a> = Container<'a, Container<'a, Span<'a>>>;

fn read_request<'a>(
    request: &'a [u8],
    destination: &mut impl FnMut(&[u8]) -> usize,
) -> Parse<Vec<Resource<'a>>> {
    let mut resources = Vec::new();
    let mut fields = Reader::new(request);
    while let Some((tag, field)) = fields.next()? {
        if tag == 1 {
            resources.push(read_container(field.message()?, |scope| {
                read_container(scope, |span| {
                    // Exporters write the trace id first: the rest of the span is skipped
                    // (the ingester reads it), so routing costs little past the first field.
                    let mut trace_id: &[u8] = &[];
                    let mut fields = Reader::new(span);
                    while let Some((tag, field)) = fields.next()? {
                        if tag == 1 {
                            trace_id = field.bytes()?;
                            break;
                        }
                    }
                    Ok(destination(trace_id))
                })
            })?);
        }
    }
    Ok(resources)
}

/// Reads a container's fields, each message of field 2 through `inner`, which gets the
/// message and returns what to keep of it; a span (the innermost) keeps its whole field.
fn read_container<'a, T: Contained<'a>>(
    bytes: &'a [u8],
    mut inner: impl FnMut(&'a [u8]) -> Parse<T::Read>,
) -> Parse<Container<'a, T>> {
    let mut container = Container {
        other: Vec::new(),
        contained: Vec::new(),
    };
    let mut fields = Reader::new(bytes);
    loop {
        let before = fields.rest();
        let Some((tag, field)) = fields.next()? else {
            break;
        };
        let raw = &before[..before.len() - fields.rest().len()];
        if tag == 2 {
            container
                .contained
                .push(T::keep(inner(field.message()?)?, raw));
        } else {
            container.other.push(raw);
        }
    }
    Ok(container)
}

/// What a container keeps of a message of its field 2.
trait Contained<'a>: Sized {
    type Read;
    fn keep(read: Self::Read, raw: &'a [u8]) -> Self;
}

impl<'a> Contained<'a> for Span<'a> {
    type Read = usize;
    fn keep(destination: usize, raw: &'a [u8]) -> Self {
        (destination, raw)
    }
}

impl<'a, T> Contained<'a> for Container<'a, T> {
    type Read = Container<'a, T>;
    fn keep(read: Self::Read, _raw: &'a [u8]) -> Self {
        read
    }
}

/// The body length of `scope` with only the spans of `to`, or `None` when it has none.
fn scope_len(scope: &Container<'_, Span<'_>>, to: usize) -> Option<usize> {
    let spans: usize = scope
        .contained
        .iter()
        .filter(|(d, _)| *d == to)
        .map(|(_, raw)| raw.len())
        .sum();
    (spans > 0).then(|| spans + scope.other.iter().map(|raw| raw.len()).sum::<usize>())
}

fn resource_len(resource: &Resource<'_>, to: usize) -> Option<usize> {
    let scopes: usize = resource
        .contained
        .iter()
        .filter_map(|scope| scope_len(scope, to))
        .map(framed_len)
        .sum();
    (scopes > 0).then(|| scopes + resource.other.iter().map(|raw| raw.len()).sum::<usize>())
}

/// A length-delimited field of one-byte key with a body of `len`.
fn framed_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

fn put_frame(out: &mut BytesMut, key: u8, len: usize) {
    out.put_u8(key);
    let mut value = len as u64;
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Field 1 (resource spans) of a request, field 2 (scope spans, spans) of the others.
const RESOURCE_SPANS_KEY: u8 = (1 << 3) | 2;
const CONTAINED_KEY: u8 = (2 << 3) | 2;

fn assemble(request: &Bytes, resources: &[Resource<'_>], destinations: usize) -> Vec<Option<Part>> {
    let mut spans = vec![0usize; destinations];
    for resource in resources {
        for scope in &resource.contained {
            for (to, _) in &scope.contained {
                spans[*to] += 1;
            }
        }
    }
    let mut parts = vec![None; destinations];
    let used: Vec<usize> = (0..destinations).filter(|to| spans[*to] > 0).collect();
    if let [only] = used.as_slice() {
        parts[*only] = Some(Part {
            request: request.clone(),
            spans: spans[*only],
        });
        return parts;
    }
    for to in used {
        let total: usize = resources
            .iter()
            .filter_map(|resource| resource_len(resource, to))
            .map(framed_len)
            .sum();
        let mut out = BytesMut::with_capacity(total);
        for resource in resources {
            let Some(len) = resource_len(resource, to) else {
                continue;
            };
            put_frame(&mut out, RESOURCE_SPANS_KEY, len);
            for raw in &resource.other {
                out.put_slice(raw);
            }
            for scope in &resource.contained {
                let Some(len) = scope_len(scope, to) else {
                    continue;
                };
                put_frame(&mut out, CONTAINED_KEY, len);
                for raw in &scope.other {
                    out.put_slice(raw);
                }
                for (_, raw) in scope.contained.iter().filter(|(d, _)| *d == to) {
                    out.put_slice(raw);
                }
            }
        }
        debug_assert_eq!(out.len(), total);
        parts[to] = Some(Part {
            request: out.freeze(),
            spans: spans[to],
        });
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan};

    fn attribute(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    fn span(trace: u8, name: &str) -> ProtoSpan {
        ProtoSpan {
            trace_id: vec![trace; 16],
            span_id: vec![trace.wrapping_add(1); 8],
            name: name.into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        }
    }

    fn request() -> ExportTraceServiceRequest {
        let scope = |name: &str, spans: Vec<ProtoSpan>| ScopeSpans {
            scope: Some(InstrumentationScope {
                name: name.into(),
                ..Default::default()
            }),
            spans,
            schema_url: format!("https://schema/{name}"),
        };
        let resource = |service: &str, scopes| ResourceSpans {
            resource: Some(ProtoResource {
                attributes: vec![attribute("service.name", service)],
                ..Default::default()
            }),
            scope_spans: scopes,
            schema_url: String::new(),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                resource(
                    "checkout",
                    vec![
                        scope("http", vec![span(1, "a"), span(2, "b"), span(1, "c")]),
                        scope("db", vec![span(2, "d")]),
                    ],
                ),
                resource("payments", vec![scope("grpc", vec![span(3, "e")])]),
            ],
        }
    }

    /// Each part decodes to the request with only the spans of its destination, resources
    /// and scopes kept with their spans.
    #[test]
    fn a_request_splits_by_trace_with_its_resources_and_scopes() {
        let original = request();
        let bytes = Bytes::from(original.encode_to_vec());
        // Traces 1 and 3 to destination 0, trace 2 to 1; destination 2 gets nothing.
        let parts =
            split_request(&bytes, 3, |trace| usize::from(trace.first() == Some(&2))).unwrap();
        assert!(parts[2].is_none());
        let decode = |part: &Option<Part>| {
            ExportTraceServiceRequest::decode(part.as_ref().unwrap().request.as_ref()).unwrap()
        };
        let mut want0 = original.clone();
        want0.resource_spans[0].scope_spans[0].spans.remove(1);
        want0.resource_spans[0].scope_spans.remove(1);
        assert_eq!(decode(&parts[0]), want0);
        assert_eq!(parts[0].as_ref().unwrap().spans, 3);
        let mut want1 = original.clone();
        want1.resource_spans.remove(1);
        want1.resource_spans[0].scope_spans[0].spans = vec![span(2, "b")];
        assert_eq!(decode(&parts[1]), want1);
        assert_eq!(parts[1].as_ref().unwrap().spans, 2);
    }

    #[test]
    fn a_request_to_one_destination_is_forwarded_as_it_came() {
        let bytes = Bytes::from(request().encode_to_vec());
        let parts = split_request(&bytes, 2, |_| 1).unwrap();
        assert!(parts[0].is_none());
        let part = parts[1].as_ref().unwrap();
        assert_eq!(part.request.as_ptr(), bytes.as_ptr(), "no copy");
        assert_eq!(part.spans, 5);
        assert!(
            split_request(&Bytes::new(), 2, |_| 0)
                .unwrap()
                .iter()
                .all(Option::is_none)
        );
    }

    #[test]
    fn bytes_that_are_not_a_request_are_refused_and_unusual_encodings_are_split() {
        let error = split_request(&Bytes::from_static(&[0x0a, 0xff]), 2, |_| 0).unwrap_err();
        assert!(
            matches!(error, CollectorError::InvalidRequest(_)),
            "{error}"
        );
        // The same resource spans sent twice in pieces is still read (prost merges).
        let original = request();
        let mut bytes = original.encode_to_vec();
        bytes.extend(original.encode_to_vec());
        let parts = split_request(&Bytes::from(bytes), 1, |_| 0).unwrap();
        assert_eq!(parts[0].as_ref().unwrap().spans, 10);
    }
}

//! The one receive path both transports share, from the request's headers to its answer:
//! who sends ([`Receiver::authorize`]), decoding within the memory reserved for it, the
//! retention horizon, the tenant's rate, the sink, and the figures of every answer
//! ([`Receiver::accept`]). `grpc.rs` and `http.rs` keep only what their protocol needs:
//! framing, content types and encodings, and the mapping of errors to status codes.
//!
//! ```text
//!  transport: headers ──authorize──> memory.admit ──read/inflate──┐
//!  accept:    decode (runtime or blocking pool) ──> refuse_expired ──> hold the batch
//!             ──> admit (rate) ──> SpanSink ──> count ──> ExportTraceServiceResponse
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arrow::record_batch::RecordBatch;
use bytes::{Bytes, BytesMut};
use flowscope_auth::{AuthError, Permission, Principal, TENANT_HEADER, TenantId};
use flowscope_base::memory::Reservation;
use flowscope_model::retention::retention_cutoff_ns;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;

use crate::decode::{
    DecodedTraces, INLINE_DECODE_BYTES, INLINE_DECODE_JSON_BYTES, decode_json, decode_protobuf,
};
use crate::dedup::{RequestId, part_suffix, segments};
use crate::route::{Cluster, Routed, TakePart, forwarded_headers, route_of, split_request};
use crate::sink::SpanSink;
use crate::{CollectorConfig, CollectorError, DECODE_FACTOR, SinkError};

/// What of a request's headers routing needs: whether it is a part forwarded by a
/// receiver (its route), and the credentials a receiver forwards with its parts.
#[derive(Debug, Default, Clone)]
pub(crate) struct Routing {
    pub(crate) forwarded: Option<String>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

impl Routing {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        Self {
            forwarded: route_of(headers),
            headers: forwarded_headers(headers),
        }
    }
}

/// The two OTLP payload encodings. gRPC only ever sends protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// Whether a body of `bytes` (as decoded, not compressed) is decoded on the async runtime
    /// rather than the blocking pool.
    pub(crate) fn decodes_inline(self, bytes: usize) -> bool {
        let inline = match self {
            Encoding::Protobuf => INLINE_DECODE_BYTES,
            Encoding::Json => INLINE_DECODE_JSON_BYTES,
        };
        bytes <= inline
    }
}

/// What a receiver holds: where spans go, the settings they are taken under, and the
/// `protocol` label of its figures.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) sink: Arc<dyn SpanSink>,
    pub(crate) config: CollectorConfig,
    pub(crate) protocol: &'static str,
}

impl Receiver {
    /// The principal a request sends spans as, from its `authorization` header and every
    /// value of its tenant header, checked before any of its body is read.
    pub(crate) fn authorize(&self, headers: &HeaderMap) -> Result<Principal, CollectorError> {
        let principal = self.config.access.authenticate(
            headers
                .get(http::header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
            headers
                .get_all(TENANT_HEADER)
                .iter()
                .map(HeaderValue::as_bytes),
        )?;
        if !principal.may(Permission::Ingest) {
            return Err(AuthError::Forbidden("this token may not send spans").into());
        }
        Ok(principal)
    }

    /// Decodes a request and hands its spans to the sink: the step after the transport has
    /// read it. `body` gives the request's bytes in `encoding` (inflating them first if the
    /// transport must, each buffer reserved in `reservation`); it runs on the async runtime
    /// when `inline`, else on the blocking pool. Then spans past the retention horizon are
    /// refused, the batch is what the request holds until the sink answers, the tenant's rate
    /// is taken, and the spans are counted. Ok is the answer to send.
    pub(crate) async fn accept<B>(
        &self,
        routing: Routing,
        principal: &Principal,
        reservation: Reservation,
        encoding: Encoding,
        inline: bool,
        body: B,
    ) -> Result<ExportTraceServiceResponse, CollectorError>
    where
        B: FnOnce(&mut Reservation) -> Result<Bytes, CollectorError> + Send + 'static,
    {
        let mut forwarded_to = None;
        if let Some(cluster) = &self.config.cluster {
            match &routing.forwarded {
                // A part a receiver routed here: taken if this node holds its partitions.
                Some(route) => {
                    cluster.admit(route)?;
                    forwarded_to = Some(cluster.clone());
                }
                None if cluster.routes() => {
                    return self
                        .route(
                            cluster.clone(),
                            principal,
                            reservation,
                            encoding,
                            inline,
                            body,
                            routing.headers,
                        )
                        .await;
                }
                None => {}
            }
        }
        let mut reservation = reservation;
        let tenant = principal.tenant.clone();
        let cluster = forwarded_to.clone();
        let decode = move || {
            // A forwarded part keeps only the partitions this ingester has not stored yet.
            let mut marks = Vec::new();
            let decoded = body(&mut reservation)
                .and_then(|body| match &cluster {
                    Some(cluster) => {
                        let (body, fresh) = unseen_part(cluster.as_ref(), &tenant, body)?;
                        marks = fresh;
                        Ok(body)
                    }
                    None => Ok(body),
                })
                .and_then(|body| decode_reserved(body, encoding, &mut reservation));
            (decoded.map(|decoded| (decoded, marks)), reservation)
        };
        let (decoded, mut reservation) = if inline {
            decode()
        } else {
            tokio::task::spawn_blocking(decode)
                .await
                .map_err(|error| CollectorError::Internal(format!("decode task failed: {error}")))?
        };
        let (
            Decoded {
                traces: mut decoded,
                bytes: decoded_bytes,
                protobuf,
            },
            marks,
        ) = decoded?;
        refuse_expired(&mut decoded, self.config.retention)?;
        // The batch is what this request holds until the sink answers. A protobuf body kept for
        // the sink is counted by the store when it takes it, as its WAL record.
        reservation.set(
            decoded
                .batch
                .as_ref()
                .map_or(0, RecordBatch::get_array_memory_size),
        );
        let response = decoded.export_response();
        if marks.len() > 1 && rejected_spans(&response) > 0 {
            // Which request each refused span came from is not known here: nothing is
            // stored, and the receiver sends each request's part alone.
            return Err(CollectorError::OneByOne(format!(
                "this call carries the parts of {} requests and {} of its spans are refused: send the parts one by one",
                marks.len(),
                rejected_spans(&response)
            )));
        }
        let spans = decoded.batch.as_ref().map_or(0, |b| b.num_rows() as u64);
        let written = match (decoded.batch, &forwarded_to, marks) {
            // A forwarded part is written by a task of its own: a receiver that gives up
            // waiting drops this call, but what reaches the WAL is still noted as stored, so
            // the copy it routes again is not stored twice.
            (Some(batch), Some(cluster), marks) if !marks.is_empty() => {
                let (this, cluster, principal) = (self.clone(), cluster.clone(), principal.clone());
                tokio::spawn(async move {
                    // A copy being written now (or stored since it was looked at) waits for
                    // the first to settle: answered "retry", then seen as stored.
                    let mut writing = Vec::with_capacity(marks.len());
                    for (id, mask) in marks {
                        let Some(guard) = cluster.part_ids().begin(id, mask) else {
                            return Err(CollectorError::Sink(SinkError::Unavailable(
                                "a copy of this part is being stored now; retry".into(),
                            )));
                        };
                        writing.push(guard);
                    }
                    let written = this.write(&principal, batch, decoded_bytes, protobuf).await;
                    if written.is_ok() {
                        for guard in writing {
                            guard.stored();
                        }
                    }
                    written
                })
                .await
                .map_err(|error| CollectorError::Internal(format!("write task failed: {error}")))
                .and_then(|written| written)
            }
            (Some(batch), _, _) => self.write(principal, batch, decoded_bytes, protobuf).await,
            (None, _, _) => Ok(()),
        };
        let rejected = rejected_spans(&response).max(0) as u64;
        self.count_spans(&principal.tenant, spans, rejected, written.is_ok());
        written?;
        Ok(response)
    }

    /// A receiver's way with a request: its protobuf bytes (a JSON body is encoded as
    /// protobuf) are split by trace and forwarded by `cluster`; the spans are decoded, rated
    /// and counted by the ingesters that take them.
    #[allow(clippy::too_many_arguments)]
    async fn route<B>(
        &self,
        cluster: Arc<dyn Cluster>,
        principal: &Principal,
        mut reservation: Reservation,
        encoding: Encoding,
        inline: bool,
        body: B,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<ExportTraceServiceResponse, CollectorError>
    where
        B: FnOnce(&mut Reservation) -> Result<Bytes, CollectorError> + Send + 'static,
    {
        let read = move || {
            let request = body(&mut reservation).and_then(|body| match encoding {
                Encoding::Protobuf => Ok(body),
                Encoding::Json => {
                    reservation.grow(DECODE_FACTOR * body.len())?;
                    let request: ExportTraceServiceRequest = serde_json::from_slice(&body)
                        .map_err(|error| {
                            CollectorError::InvalidRequest(format!(
                                "request body is not valid OTLP/JSON: {error}"
                            ))
                        })?;
                    Ok(Bytes::from(prost::Message::encode_to_vec(&request)))
                }
            });
            (request, reservation)
        };
        // The bytes are held until every part is answered. A gRPC message is read already
        // (tonic inflated it) and a protobuf body is only split on the wire: never worth a
        // trip to the blocking pool. An HTTP body may still have to be inflated.
        let inline = inline || (self.protocol == "grpc" && matches!(encoding, Encoding::Protobuf));
        let (request, _reservation) = if inline {
            read()
        } else {
            tokio::task::spawn_blocking(read)
                .await
                .map_err(|error| CollectorError::Internal(format!("decode task failed: {error}")))?
        };
        let local: Arc<dyn TakePart> = Arc::new(self.clone());
        Ok(cluster
            .route(&principal.tenant, headers, request?, local)
            .await?
            .response())
    }

    /// Takes the batch's spans and bytes from the tenant's rate, then gives the batch (and
    /// the protobuf request it came from, for a sink that logs requests) to the sink.
    async fn write(
        &self,
        principal: &Principal,
        batch: RecordBatch,
        decoded_bytes: usize,
        protobuf: Option<Bytes>,
    ) -> Result<(), CollectorError> {
        self.admit(principal, batch.num_rows(), decoded_bytes)?;
        match protobuf {
            Some(request) => {
                self.sink
                    .write_request(&principal.tenant, batch, request)
                    .await?
            }
            None => self.sink.write(&principal.tenant, batch).await?,
        }
        Ok(())
    }

    /// Takes a decoded request's spans and bytes from its tenant's rate limits.
    fn admit(
        &self,
        principal: &Principal,
        spans: usize,
        bytes: usize,
    ) -> Result<(), CollectorError> {
        let limits = self.config.access.limits(&principal.tenant);
        self.config
            .limiter
            .admit(
                &principal.tenant,
                limits,
                spans as u64,
                bytes as u64,
                Instant::now(),
            )
            .map_err(|retry_after| CollectorError::RateLimited { retry_after })
    }

    /// Counts an answered export request of `tenant` under the outcome of `result`.
    pub(crate) fn count_answer(
        &self,
        tenant: &TenantId,
        result: &Result<ExportTraceServiceResponse, CollectorError>,
    ) {
        let outcome = outcome(result.as_ref().map(rejected_spans));
        self.count_request(Some(tenant), outcome);
    }

    /// Counts a request refused with `error` (`tenant` is `None` when it was refused before
    /// its tenant was known).
    pub(crate) fn count_refusal(&self, tenant: Option<&TenantId>, error: &CollectorError) {
        self.count_request(tenant, outcome(Err(error)));
    }

    /// Counts one answered export request of `tenant` (`None`: refused before its tenant
    /// was known) under its outcome.
    pub(crate) fn count_request(&self, tenant: Option<&TenantId>, outcome: &'static str) {
        let protocol = self.protocol;
        match tenant {
            Some(tenant) => self
                .config
                .telemetry
                .ingest_requests
                .add((tenant.as_str().to_string(), protocol, outcome), 1),
            None => self
                .config
                .telemetry
                .ingest_unattributed
                .add((protocol, outcome), 1),
        }
    }

    /// Counts a decoded request's spans: `spans` stored (or, if `written` is false, all
    /// refused with the request) and `rejected` refused in the partial success.
    fn count_spans(&self, tenant: &TenantId, spans: u64, rejected: u64, written: bool) {
        let counters = &self.config.telemetry.ingest_spans;
        let tenant = tenant.as_str();
        if spans > 0 {
            let outcome = if written { "accepted" } else { "refused" };
            counters.add((tenant.to_string(), self.protocol, outcome), spans);
        }
        if rejected > 0 {
            counters.add((tenant.to_string(), self.protocol, "rejected"), rejected);
        }
    }
}

/// A decoded request body.
struct Decoded {
    traces: DecodedTraces,
    /// The body's length after decompression: what the rate limit counts, so that gzip
    /// does not buy a tenant more.
    bytes: usize,
    /// The protobuf request (inflated), for a sink that logs it; `None` for JSON.
    protobuf: Option<Bytes>,
}

/// Decodes `body` once the Arrow builders decoding fills (up to twice the protobuf or
/// JSON's size) are reserved.
fn decode_reserved(
    body: Bytes,
    encoding: Encoding,
    reservation: &mut Reservation,
) -> Result<Decoded, CollectorError> {
    reservation.grow(DECODE_FACTOR * body.len())?;
    let bytes = body.len();
    let (traces, protobuf) = match encoding {
        Encoding::Protobuf => (decode_protobuf(&body)?, Some(body)),
        Encoding::Json => (decode_json(&body)?, None),
    };
    Ok(Decoded {
        traces,
        bytes,
        protobuf,
    })
}

/// Refuses the spans of a decoded request that started before the retention horizon, by the
/// clock now: the one place both receivers apply `CollectorConfig::retention`. WAL replay
/// drops the same spans from the logged request (`flowscope_query::StoreConfig::retention`),
/// so the decoder itself stays free of clocks and settings.
fn refuse_expired(
    decoded: &mut DecodedTraces,
    retention: Option<Duration>,
) -> Result<(), CollectorError> {
    let Some(retention) = retention else {
        return Ok(());
    };
    let cutoff_ns = retention_cutoff_ns(SystemTime::now(), retention);
    decoded.refuse_started_before(cutoff_ns, retention)
}

/// Spans refused in an answer's partial success.
fn rejected_spans(response: &ExportTraceServiceResponse) -> i64 {
    response
        .partial_success
        .as_ref()
        .map_or(0, |partial| partial.rejected_spans)
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
        CollectorError::OneByOne(_) => "one_by_one",
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

/// A forwarded call without the partitions this ingester has already stored for the same
/// client requests (`crate::dedup`; a call may carry the parts of several requests, each
/// followed by its mark), and the (request, partitions) it is left with: the call as it came
/// when none are stored, nothing when all are.
fn unseen_part(
    cluster: &dyn Cluster,
    tenant: &TenantId,
    body: Bytes,
) -> Result<(Bytes, Vec<(RequestId, u64)>), CollectorError> {
    let segments = segments(&body);
    if segments.iter().all(|segment| segment.mark.is_none()) {
        return Ok((body, Vec::new()));
    }
    let mut kept = BytesMut::new();
    let mut marks = Vec::with_capacity(segments.len());
    let mut changed = false;
    for segment in segments {
        let bytes = body.slice(segment.range);
        let Some((id, mask)) = segment.mark else {
            kept.extend_from_slice(&bytes);
            continue;
        };
        let seen = cluster.part_ids().seen(id) & mask;
        if seen == 0 {
            kept.extend_from_slice(&bytes);
            kept.extend_from_slice(&part_suffix(id, mask));
            marks.push((id, mask));
            continue;
        }
        changed = true;
        if seen == mask {
            tracing::debug!(%tenant, "a part stored here was sent again; answered without storing it twice");
            continue;
        }
        // Partitions moved between two tries: part of this was stored here, part elsewhere.
        let fresh = mask & !seen;
        let parts = split_request(&bytes, 2, |trace_id| {
            usize::from(seen & (1u64 << (cluster.partition_of(tenant, trace_id) % 64)) != 0)
        })?;
        if let Some(part) = parts.into_iter().next().flatten() {
            kept.extend_from_slice(&part.request);
            kept.extend_from_slice(&part_suffix(id, fresh));
            marks.push((id, fresh));
        }
    }
    Ok((if changed { kept.freeze() } else { body }, marks))
}

impl TakePart for Receiver {
    fn take(
        &self,
        who: &str,
        headers: &[(HeaderName, HeaderValue)],
        route: String,
        part: Bytes,
        mark: Bytes,
    ) -> BoxFuture<'static, Result<Routed, CollectorError>> {
        // Counted as what it is: a part taken in process, not a request from a client.
        let mut this = self.clone();
        this.protocol = "local";
        let who = who.to_string();
        let mut map = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            map.append(name.clone(), value.clone());
        }
        Box::pin(async move {
            let result = async {
                let principal = this.authorize(&map)?;
                let reservation = this.config.memory.admit()?;
                let len = part.len() + mark.len();
                // The part and its mark, one after the other, as a remote ingester reads them.
                let body = move |reservation: &mut Reservation| {
                    reservation.grow(len)?;
                    let mut joined = BytesMut::with_capacity(len);
                    joined.extend_from_slice(&part);
                    joined.extend_from_slice(&mark);
                    Ok(joined.freeze())
                };
                let routing = Routing {
                    forwarded: Some(route),
                    headers: Vec::new(),
                };
                let inline = Encoding::Protobuf.decodes_inline(len);
                let result = this
                    .accept(
                        routing,
                        &principal,
                        reservation,
                        Encoding::Protobuf,
                        inline,
                        body,
                    )
                    .await;
                this.count_answer(&principal.tenant, &result);
                result
            }
            .await;
            result.map(Routed::of_response).map_err(|error| match error {
                CollectorError::InvalidRequest(_)
                | CollectorError::TooLarge { .. }
                | CollectorError::UnsupportedMediaType(_) => {
                    CollectorError::InvalidRequest(error.to_string())
                }
                CollectorError::Auth(_) => CollectorError::Internal(format!(
                    "ingester {who} (this node) refused the credentials its receiver accepted: {error}"
                )),
                error => CollectorError::Sink(SinkError::Unavailable(format!(
                    "ingester {who} (this node) did not take its part: {error}"
                ))),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::{PartIds, mark_part, part_mark, request_id};
    use crate::test_support::{request_with, valid_span};
    use prost::Message as _;

    /// An ingester's side of a cluster: each trace's partition is its id's last byte.
    #[derive(Debug)]
    struct Ingester(PartIds);

    impl Cluster for Ingester {
        fn routes(&self) -> bool {
            false
        }
        fn route(
            &self,
            _: &TenantId,
            _: Vec<(HeaderName, HeaderValue)>,
            _: Bytes,
            _: Arc<dyn TakePart>,
        ) -> BoxFuture<'static, Result<Routed, CollectorError>> {
            unreachable!("an ingester routes nothing")
        }
        fn admit(&self, _: &str) -> Result<(), CollectorError> {
            Ok(())
        }
        fn part_ids(&self) -> &PartIds {
            &self.0
        }
        fn partition_of(&self, _: &TenantId, trace_id: &[u8]) -> u32 {
            u32::from(trace_id.last().copied().unwrap_or(0)) % 64
        }
    }

    /// Spans of partitions 1, 2 and 3, two of each.
    fn request() -> Bytes {
        let spans = (0..6u8)
            .map(|i| {
                let mut span = valid_span(i + 1);
                span.trace_id = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 + i % 3];
                span
            })
            .collect();
        Bytes::from(request_with(spans).encode_to_vec())
    }

    fn spans_in(bytes: &[u8]) -> usize {
        ExportTraceServiceRequest::decode(bytes)
            .unwrap()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }

    #[test]
    fn a_part_sent_again_keeps_only_the_partitions_not_stored_yet() {
        let tenant = TenantId::default_tenant();
        let cluster = Ingester(PartIds::new(16));
        let request = request();
        let id = request_id(tenant.as_str(), &request);
        let part = mark_part(&request, id, 0b1110);
        // Unknown: taken whole.
        let (body, marks) = unseen_part(&cluster, &tenant, part.clone()).unwrap();
        assert_eq!((body, marks), (part.clone(), vec![(id, 0b1110)]));
        // Partition 2 stored here before (the rest went elsewhere): the rest is taken.
        cluster.0.note(id, 0b0100);
        let (body, marks) = unseen_part(&cluster, &tenant, part.clone()).unwrap();
        assert_eq!(marks, vec![(id, 0b1010)]);
        assert_eq!(spans_in(&body), 4);
        assert_eq!(part_mark(&body), Some((id, 0b1010)));
        // All stored: nothing is taken.
        cluster.0.note(id, 0b1010);
        let (body, marks) = unseen_part(&cluster, &tenant, part).unwrap();
        assert_eq!((body.len(), marks), (0, vec![]));
        // An unmarked request is taken as it came.
        let (body, marks) = unseen_part(&cluster, &tenant, request.clone()).unwrap();
        assert_eq!((body, marks), (request, vec![]));
    }

    /// A receiver's batch: the parts of two requests in one call, each followed by its
    /// mark. Only what this ingester has not stored of each is taken, and the WAL's copy
    /// gives both marks back on replay.
    #[test]
    fn a_call_carrying_two_requests_parts_keeps_what_each_has_not_stored() {
        let tenant = TenantId::default_tenant();
        let cluster = Ingester(PartIds::new(16));
        let (first, second) = (request(), {
            let mut other = valid_span(9);
            other.trace_id = vec![7; 16];
            Bytes::from(request_with(vec![other]).encode_to_vec())
        });
        let (a, b) = (
            request_id(tenant.as_str(), &first),
            request_id(tenant.as_str(), &second),
        );
        let mut call = BytesMut::new();
        call.extend_from_slice(&mark_part(&first, a, 0b1110));
        call.extend_from_slice(&mark_part(&second, b, 1 << 7));
        let call = call.freeze();
        assert_eq!(
            spans_in(&call),
            7,
            "a plain decoder reads every part's spans"
        );
        let (body, marks) = unseen_part(&cluster, &tenant, call.clone()).unwrap();
        assert_eq!((&body, &marks), (&call, &vec![(a, 0b1110), (b, 1 << 7)]));
        let replayed = PartIds::new(16);
        replayed.note_logged(&call);
        assert_eq!((replayed.seen(a), replayed.seen(b)), (0b1110, 1 << 7));
        // The first request stored here before (its first try's answer was lost): only the
        // second's part is left, with its mark.
        cluster.0.note(a, 0b1110);
        let (body, marks) = unseen_part(&cluster, &tenant, call).unwrap();
        assert_eq!(marks, vec![(b, 1 << 7)]);
        assert_eq!(spans_in(&body), 1);
        assert_eq!(body, mark_part(&second, b, 1 << 7));
    }
}

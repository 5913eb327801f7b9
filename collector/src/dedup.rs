//! Exactly once across a cluster's retries (issue 24). A receiver names every part it
//! forwards: the id of the client's request (a hash of the tenant and the request's bytes)
//! and the partitions whose spans the part holds, in a field appended to the part
//! ([`PART_FIELD`], which OTLP does not define and every decoder skips). The spans of one
//! partition of one request always travel together, whatever the partition map, so
//! (request, partition) names them however often the request is split and sent again.
//!
//! An ingester remembers the (request, partitions) it made durable ([`PartIds`]) and takes
//! only the partitions of a part it has not: a part sent again after its answer was lost
//! (the ingester died after its WAL sync, a receiver gave up, the client retried) is
//! answered without storing anything twice. The field is in the bytes the WAL logs, so a
//! restarted ingester learns them again on replay.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use bytes::{BufMut as _, Bytes, BytesMut};

use crate::wire::Reader;

/// The part's field: 16 bytes of request id and 8 of partition mask, little-endian.
pub const PART_FIELD: u32 = 1000;
const PART_LEN: usize = 24;

/// A client request's id: its tenant and its bytes, hashed.
pub type RequestId = u128;

/// The id of `request` sent by `tenant`.
pub fn request_id(tenant: &str, request: &[u8]) -> RequestId {
    let seed = twox_hash::XxHash3_64::oneshot(tenant.as_bytes());
    twox_hash::XxHash3_128::oneshot_with_seed(seed, request)
}

/// `part` with the field naming it: request `id`, the partitions of `mask` (bit `p` for
/// partition `p`).
pub fn mark_part(part: &[u8], id: RequestId, mask: u64) -> Bytes {
    let mark = part_suffix(id, mask);
    let mut out = BytesMut::with_capacity(part.len() + mark.len());
    out.put_slice(part);
    out.put_slice(&mark);
    out.freeze()
}

/// The field [`mark_part`] appends, alone: a part followed by it is the marked part (a
/// message's fields may come in any order), for a sender that writes both without joining
/// them first.
pub fn part_suffix(id: RequestId, mask: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + PART_LEN);
    put_varint(&mut out, u64::from(PART_FIELD << 3 | 2));
    put_varint(&mut out, PART_LEN as u64);
    out.put_u128_le(id);
    out.put_u64_le(mask);
    out.freeze()
}

/// The request id and partition mask of a marked part (the last mark, if several).
pub fn part_mark(request: &[u8]) -> Option<(RequestId, u64)> {
    let mut fields = Reader::new(request);
    let mut found = None;
    while let Ok(Some((tag, field))) = fields.next() {
        if tag == PART_FIELD
            && let Ok(bytes) = field.bytes()
            && let Ok(bytes) = <[u8; PART_LEN]>::try_from(bytes)
        {
            let (id, mask) = bytes.split_at(16);
            found = Some((
                u128::from_le_bytes(id.try_into().ok()?),
                u64::from_le_bytes(mask.try_into().ok()?),
            ));
        }
    }
    found
}

/// One client request's share of a forwarded call: the byte range of its fields and its
/// mark. A receiver may send the parts of several requests in one call (each part followed
/// by its mark); a mark closes the fields before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub range: std::ops::Range<usize>,
    pub mark: Option<(RequestId, u64)>,
}

fn mark_of(bytes: &[u8]) -> Option<(RequestId, u64)> {
    let bytes = <[u8; PART_LEN]>::try_from(bytes).ok()?;
    let (id, mask) = bytes.split_at(16);
    Some((
        u128::from_le_bytes(id.try_into().ok()?),
        u64::from_le_bytes(mask.try_into().ok()?),
    ))
}

/// The segments of a forwarded call, in order: what follows the last mark (nothing, for a
/// call a receiver sent) is a segment without one. Bytes that do not parse are one unmarked
/// segment, for the decoder to refuse.
pub fn segments(request: &[u8]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut fields = Reader::new(request);
    let mut start = 0;
    loop {
        let before = request.len() - fields.rest().len();
        match fields.next() {
            Ok(Some((tag, field))) => {
                if tag == PART_FIELD
                    && let Some(mark) = field.bytes().ok().and_then(mark_of)
                {
                    out.push(Segment {
                        range: start..before,
                        mark: Some(mark),
                    });
                    start = request.len() - fields.rest().len();
                }
            }
            Ok(None) => break,
            Err(_) => {
                return vec![Segment {
                    range: 0..request.len(),
                    mark: None,
                }];
            }
        }
    }
    if start < request.len() || out.is_empty() {
        out.push(Segment {
            range: start..request.len(),
            mark: None,
        });
    }
    out
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// The (request, partitions) an ingester has made durable, the most recent
/// [`PartIds::capacity`] requests: retries come within seconds or minutes.
#[derive(Debug)]
pub struct PartIds {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    masks: HashMap<RequestId, u64>,
    order: VecDeque<RequestId>,
    /// Partitions of requests being written now: a copy arriving meanwhile (a receiver that
    /// gave up waiting and routed it again) is turned away until the first is settled.
    pending: HashMap<RequestId, u64>,
}

/// The partitions of a request being written by this ingester: [`PartIds::begin`] takes
/// them, and dropping it gives them back (noted as stored only after [`Writing::stored`]).
#[derive(Debug)]
pub struct Writing<'a> {
    ids: &'a PartIds,
    id: RequestId,
    mask: u64,
    stored: bool,
}

impl Writing<'_> {
    /// The partitions are durable: remembered as stored.
    pub fn stored(mut self) {
        self.stored = true;
    }
}

impl Drop for Writing<'_> {
    /// Notes the partitions (if stored) and gives them back under one lock, so that no copy
    /// finds them neither pending nor stored.
    fn drop(&mut self) {
        let mut inner = self
            .ids
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.stored {
            inner.note(self.id, self.mask, self.ids.capacity);
        }
        if let Some(pending) = inner.pending.get_mut(&self.id) {
            *pending &= !self.mask;
            if *pending == 0 {
                inner.pending.remove(&self.id);
            }
        }
    }
}

impl Inner {
    fn note(&mut self, id: RequestId, mask: u64, capacity: usize) {
        match self.masks.get_mut(&id) {
            Some(known) => *known |= mask,
            None => {
                self.masks.insert(id, mask);
                self.order.push_back(id);
                while self.order.len() > capacity {
                    if let Some(oldest) = self.order.pop_front() {
                        self.masks.remove(&oldest);
                    }
                }
            }
        }
    }
}

impl PartIds {
    /// Remembers up to `capacity` requests (about 40 bytes each).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// The partitions of request `id` already made durable here.
    pub fn seen(&self, id: RequestId) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.masks.get(&id).copied().unwrap_or(0)
    }

    /// Takes the partitions of `mask` of request `id` for a write, or `None` while a copy of
    /// any of them is being written or was stored since the caller looked ([`PartIds::seen`]):
    /// the caller answers "retry", and the retry finds them settled.
    pub fn begin(&self, id: RequestId, mask: u64) -> Option<Writing<'_>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner
            .masks
            .get(&id)
            .is_some_and(|stored| stored & mask != 0)
        {
            return None;
        }
        let pending = inner.pending.entry(id).or_insert(0);
        if *pending & mask != 0 {
            return None;
        }
        *pending |= mask;
        Some(Writing {
            ids: self,
            id,
            mask,
            stored: false,
        })
    }

    /// Records that the partitions of `mask` of request `id` are durable here.
    pub fn note(&self, id: RequestId, mask: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.note(id, mask, self.capacity);
    }

    /// Records the marks of a request read back from the WAL (one per client request whose
    /// part it carried), if it has any.
    pub fn note_logged(&self, request: &[u8]) {
        for segment in segments(request) {
            if let Some((id, mask)) = segment.mark {
                self.note(id, mask);
            }
        }
    }

    /// Requests remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .masks
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;

    #[test]
    fn a_marked_part_decodes_as_the_part_and_gives_its_mark_back() {
        let request = crate::test_support::request_with(
            (1..=3).map(crate::test_support::valid_span).collect(),
        );
        let bytes = request.encode_to_vec();
        let id = request_id("acme", &bytes);
        assert_ne!(id, request_id("other", &bytes));
        let marked = mark_part(&bytes, id, 0b1010);
        assert_eq!(part_mark(&marked), Some((id, 0b1010)));
        assert_eq!(part_mark(&bytes), None);
        // Every decoder skips the field: prost, and ours.
        assert_eq!(
            ExportTraceServiceRequest::decode(marked.as_ref()).unwrap(),
            request
        );
        let ours = crate::decode_logged_request(&marked).unwrap().unwrap();
        let plain = crate::decode_logged_request(&bytes).unwrap().unwrap();
        assert_eq!(ours, plain);
    }

    #[test]
    fn ids_are_remembered_by_partition_up_to_the_capacity() {
        let ids = PartIds::new(2);
        ids.note(1, 0b01);
        ids.note(1, 0b10);
        assert_eq!(ids.seen(1), 0b11);
        ids.note(2, 1);
        ids.note(3, 1);
        assert_eq!((ids.seen(1), ids.seen(2), ids.seen(3)), (0, 1, 1));
        ids.note_logged(&mark_part(b"", 9, 4));
        assert_eq!(ids.seen(9), 4);
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn a_copy_arriving_while_the_first_is_written_is_turned_away() {
        let ids = PartIds::new(8);
        let first = ids.begin(5, 0b011).unwrap();
        assert!(ids.begin(5, 0b010).is_none(), "overlapping partitions wait");
        let other = ids.begin(5, 0b100).unwrap();
        drop(other);
        assert_eq!(ids.seen(5), 0, "not stored: given back, not noted");
        first.stored();
        assert_eq!(ids.seen(5), 0b011);
        assert!(
            ids.begin(5, 0b001).is_none(),
            "stored since the caller looked: it retries, and then sees it stored"
        );
        assert!(ids.begin(5, 0b100).is_some());
    }
}

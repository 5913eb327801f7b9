//! The invariants the fuzz targets in `fuzz/` check on every input, here so that the
//! committed corpus is replayed through the very same checks on the stable toolchain
//! (`tests/fuzz_corpus.rs`). Each check panics when the decoders break an invariant and
//! returns quietly for any input they handle, refusals included. Not for other use.

use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use crate::CollectorError;
use crate::decode::{
    DecodedTraces, decode_json, decode_protobuf, decode_protobuf_with_prost, nesting_error,
};

/// What a decode gave, in a form two decodes can be compared by (errors by their message).
type Outcome = Result<(Option<RecordBatch>, usize, i64, String), String>;

fn outcome(result: Result<DecodedTraces, CollectorError>) -> Outcome {
    result
        .map(|d| (d.batch, d.accepted_spans, d.rejected_spans, d.error_message))
        .map_err(|error| error.to_string())
}

/// `wire.rs`'s decode of `body`, or `None` when it steps aside for prost.
pub fn wire_decode(body: &[u8]) -> Option<DecodedTraces> {
    crate::wire::decode(body).ok()
}

/// Binary OTLP: no panic; `wire.rs` gives exactly what prost and `convert` give, or steps
/// aside (the collector's invariant in ARCHITECTURE.md); what the receivers call agrees with
/// both; an accepted request is a valid batch in the storage schema.
pub fn check_protobuf(body: &[u8]) {
    let reference = decode_protobuf_with_prost(body);
    if let Ok(decoded) = &reference {
        check_decoded(decoded);
    }
    let reference = outcome(reference);
    if let Some(fast) = wire_decode(body) {
        check_decoded(&fast);
        assert!(
            outcome(Ok(fast)) == reference,
            "wire.rs and prost disagree on {body:02x?}"
        );
    }
    assert!(
        outcome(decode_protobuf(body)) == reference,
        "decode_protobuf differs from the prost path on {body:02x?}"
    );
}

/// OTLP/JSON: no panic, whatever the nesting (serde_json's recursion limit); an accepted
/// request is a valid batch in the storage schema; what serde reads is accepted unless a
/// value is nested past `MAX_VALUE_NESTING`; and the same request sent as protobuf (prost's
/// encoding of what serde read) is decoded to the very same answer, refusals included,
/// which runs the wire decoder over every well-formed shape the JSON fuzzer reaches.
pub fn check_json(body: &[u8]) {
    let decoded = decode_json(body);
    let Ok(request) = serde_json::from_slice::<ExportTraceServiceRequest>(body) else {
        assert!(decoded.is_err(), "decode_json accepted what serde refuses");
        return;
    };
    match &decoded {
        Ok(decoded) => check_decoded(decoded),
        Err(error) => assert_eq!(
            error.to_string(),
            nesting_error().to_string(),
            "serde reads the request but decode_json refuses it"
        ),
    }
    let as_protobuf = request.encode_to_vec();
    assert!(
        outcome(decode_protobuf(&as_protobuf)) == outcome(decoded),
        "the request decodes differently as JSON and as protobuf: {}",
        String::from_utf8_lossy(body)
    );
}

/// What every successful decode promises its caller (the receivers and the store).
fn check_decoded(decoded: &DecodedTraces) {
    match &decoded.batch {
        Some(batch) => {
            assert_eq!(batch.schema(), flowscope_model::storage_schema());
            assert_eq!(
                batch.num_rows(),
                decoded.accepted_spans,
                "the batch's rows are not the accepted spans"
            );
            assert!(decoded.accepted_spans > 0, "an empty batch is sent as None");
            for column in batch.columns() {
                if let Err(error) = column.to_data().validate_full() {
                    panic!("an accepted batch has an invalid Arrow column: {error}");
                }
            }
        }
        None => assert_eq!(decoded.accepted_spans, 0, "spans accepted without a batch"),
    }
    assert!(decoded.rejected_spans >= 0, "a negative rejected count");
    assert_eq!(
        decoded.rejected_spans > 0,
        !decoded.error_message.is_empty(),
        "rejected spans and the partial-success message disagree"
    );
    // `finish_batch`'s last resort, which only a bug reaches.
    assert!(
        !decoded.error_message.contains("internal error"),
        "the span builder refused what validation accepted: {}",
        decoded.error_message
    );
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::test_support::{request_with, valid_span};

    #[test]
    #[should_panic(expected = "the batch's rows are not the accepted spans")]
    fn a_decode_that_miscounts_its_spans_fails_the_check() {
        let mut decoded = convert_one();
        decoded.accepted_spans += 1;
        check_decoded(&decoded);
    }

    #[test]
    #[should_panic(expected = "rejected spans and the partial-success message disagree")]
    fn rejections_without_a_message_fail_the_check() {
        let mut decoded = convert_one();
        decoded.rejected_spans = 1;
        check_decoded(&decoded);
    }

    #[test]
    fn a_valid_request_passes_both_checks() {
        let request = request_with(vec![valid_span(1), valid_span(2)]);
        check_protobuf(&request.encode_to_vec());
        let json = serde_json::to_vec(&request).expect("the request encodes as JSON");
        check_json(&json);
    }

    fn convert_one() -> DecodedTraces {
        crate::convert(request_with(vec![valid_span(1)]))
    }
}

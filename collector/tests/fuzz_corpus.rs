//! The committed fuzz corpus (`fuzz/corpus/otlp_protobuf`, `fuzz/corpus/otlp_json`: seeds and
//! the inputs that once broke a decoder) through the fuzz targets' own checks, so that CI,
//! which builds no fuzzer, still runs every one of them on the stable toolchain.

// Test helpers panic on purpose: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fuzz/corpus.rs"]
mod corpus;

use corpus::corpus;
use flowscope_collector::fuzzing::{check_json, check_protobuf};
use flowscope_collector::{CollectorError, DecodedTraces};

/// Runs `check` on every input, naming the one that fails.
fn check_all(target: &str, check: fn(&[u8])) -> usize {
    let files = corpus(target);
    for (path, bytes) in &files {
        if let Err(panic) = std::panic::catch_unwind(|| check(bytes)) {
            std::panic::resume_unwind(Box::new(format!(
                "{} fails the {target} fuzz checks: {:?}",
                path.display(),
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or(panic.downcast_ref::<&str>().copied())
            )));
        }
    }
    files.len()
}

#[test]
fn the_protobuf_corpus_passes_the_fuzz_targets_checks() {
    check_all("otlp_protobuf", check_protobuf);
}

#[test]
fn the_json_corpus_passes_the_fuzz_targets_checks() {
    check_all("otlp_json", check_json);
}

#[test]
fn the_corpus_holds_requests_with_spans_not_only_refusals() {
    // A corpus of inputs every decoder refuses would pass the checks above and test little.
    type Decode = fn(&[u8]) -> Result<DecodedTraces, CollectorError>;
    let decoders: [(&str, &str, Decode); 2] = [
        (
            "otlp_protobuf",
            "protobuf",
            flowscope_collector::decode_protobuf,
        ),
        ("otlp_json", "JSON", flowscope_collector::decode_json),
    ];
    for (target, format, decode) in decoders {
        let accepted = corpus(target)
            .iter()
            .filter(|(_, bytes)| decode(bytes).is_ok_and(|d| d.accepted_spans > 0))
            .count();
        assert!(
            accepted >= 5,
            "only {accepted} {format} seeds have accepted spans"
        );
    }
}

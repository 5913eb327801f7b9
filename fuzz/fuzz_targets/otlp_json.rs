//! Arbitrary bytes as an OTLP/JSON `ExportTraceServiceRequest`, through the HTTP receiver's
//! decoder: no panic however deep the nesting, an accepted request is a valid batch, and the
//! same request as protobuf decodes to the same answer. The checks are
//! `flowscope_collector::fuzzing::check_json`, which the stable test
//! `collector/tests/fuzz_corpus.rs` also runs over the committed corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    flowscope_collector::fuzzing::check_json(body);
});

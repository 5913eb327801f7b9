//! Arbitrary bytes as a binary OTLP `ExportTraceServiceRequest`, through the receivers'
//! decoder: no panic, and `wire.rs` gives exactly what prost and `convert` give, or steps
//! aside (ARCHITECTURE.md's invariant for the collector). The checks are
//! `flowscope_collector::fuzzing::check_protobuf`, which the stable test
//! `collector/tests/fuzz_corpus.rs` also runs over the committed corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    flowscope_collector::fuzzing::check_protobuf(body);
});

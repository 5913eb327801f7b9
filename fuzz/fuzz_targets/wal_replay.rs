//! WAL replay over damaged segment files, through the real reader (`query::wal::replay`) and
//! the store's record decoder, as `SpanStore::open` uses them. The first input byte picks
//! the shape of the segment (whole file, good records then damage, or an arbitrary record
//! with a good checksum); `flowscope_query::fuzzing::check_wal_replay` says what is checked,
//! and the stable test `query/tests/fuzz_corpus.rs` runs it over the committed corpus.
#![no_main]

use std::path::Path;
use std::sync::{Once, OnceLock};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tolerate_caught_arrow_panics();
    static PAYLOADS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let payloads = PAYLOADS.get_or_init(flowscope_query::fuzzing::sample_payloads);
    let dir = match tempfile::tempdir_in(scratch()) {
        Ok(dir) => dir,
        Err(error) => panic!("no temporary directory: {error}"),
    };
    flowscope_query::fuzzing::check_wal_replay(dir.path(), data, payloads);
});

/// A RAM-backed directory when there is one: replay fsyncs, and the fuzzer runs it thousands
/// of times a second.
fn scratch() -> &'static Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    })
}

/// libfuzzer-sys's panic hook aborts on every panic, even one the code under test catches.
/// `store::decode_batches` catches arrow's panics on a corrupt record on purpose (they must
/// not stop the server from starting; the first crash this target found), so a panic raised
/// inside an arrow crate is let through to that `catch_unwind`. Any other panic still aborts
/// here, and one that nobody catches aborts in libfuzzer-sys's wrapper.
fn tolerate_caught_arrow_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_arrow = info
                .location()
                .is_some_and(|location| location.file().contains("/arrow-"));
            if !in_arrow {
                abort(info);
            }
        }));
    });
}

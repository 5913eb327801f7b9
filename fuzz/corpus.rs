//! Reading the committed fuzz corpus, for the stable tests that replay it
//! (`collector/tests/fuzz_corpus.rs`, `query/tests/fuzz_corpus.rs` include this file).

use std::path::{Path, PathBuf};

/// Every file of one target's corpus, by name; panics when the corpus is missing or small,
/// so that a moved directory cannot make these tests pass vacuously.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let bytes = std::fs::read(&path).expect("a corpus file");
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{} holds only {} inputs",
        dir.display(),
        files.len()
    );
    files
}

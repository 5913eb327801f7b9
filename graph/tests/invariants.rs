//! The crate's promise to the rest of flowscope, checked with `cargo tree`: the graph is
//! pure logic, so no async runtime, network, HTTP, storage or SQL crate may reach it.

// A panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn graph_knows_nothing_of_tokio_io_or_http() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "flowscope-graph",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dependencies: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(
        dependencies.iter().any(|d| d == "petgraph"),
        "{dependencies:?}"
    );
    for forbidden in [
        "tokio",
        "mio",
        "hyper",
        "axum",
        "tonic",
        "reqwest",
        "object_store",
        "parquet",
        "datafusion",
        "flowscope-query",
        "flowscope-collector",
        "flowscope-web",
    ] {
        assert!(
            !dependencies.iter().any(|d| d == forbidden),
            "flowscope-graph must not depend on {forbidden}"
        );
    }
}
